--[[ CullCsv: an RFC 4180 CSV reader in plain Lua 5.1 (what Python's csv module writes).

parse(text, tick) returns an array of records (arrays of strings), or nil and a message.
Quoted fields may hold commas, doubled quotes and line breaks; records end with LF or CRLF;
a UTF-8 byte-order mark at the start is dropped. No SDK use.
tick (optional) is called every TICK_RECORDS records with (records so far, bytes read, bytes in
all); when it returns true, parsing stops and parse returns nil, CullCsv.STOPPED.
]]

local CullCsv = {}

CullCsv.TICK_RECORDS = 500
CullCsv.STOPPED = "stopped by the caller"

local sub, find = string.sub, string.find

function CullCsv.parse(text, tick)
    if type(text) ~= "string" then
        return nil, "not a string"
    end
    if sub(text, 1, 3) == "\239\187\191" then
        text = sub(text, 4)
    end
    local records, record, pos, len = {}, {}, 1, #text
    local line = 1
    if len == 0 then
        return records
    end
    while true do
        local field
        if sub(text, pos, pos) == '"' then
            local parts, i = {}, pos + 1
            local startLine = line
            while true do
                local q = find(text, '"', i, true)
                if not q then
                    return nil, string.format("unterminated quoted field starting on line %d", startLine)
                end
                local chunk = sub(text, i, q - 1)
                local _, breaks = chunk:gsub("\n", "")
                line = line + breaks
                parts[#parts + 1] = chunk
                if sub(text, q + 1, q + 1) == '"' then
                    parts[#parts + 1] = '"'
                    i = q + 2
                else
                    pos = q + 1
                    break
                end
            end
            field = table.concat(parts)
            local after = sub(text, pos, pos)
            local crlf = after == "\r" and sub(text, pos + 1, pos + 1) == "\n"
            if after ~= "" and after ~= "," and after ~= "\n" and not crlf then
                return nil, string.format("text after a closing quote on line %d", line)
            end
        else
            local stop = find(text, "[,\r\n]", pos)
            while stop and sub(text, stop, stop) == "\r" and sub(text, stop + 1, stop + 1) ~= "\n" do
                stop = find(text, "[,\r\n]", stop + 1) -- a lone CR is data
            end
            stop = stop or len + 1
            field = sub(text, pos, stop - 1)
            if find(field, '"', 1, true) then
                return nil, string.format("stray quote in an unquoted field on line %d", line)
            end
            pos = stop
        end
        record[#record + 1] = field
        local c = sub(text, pos, pos)
        if c == "," then
            pos = pos + 1
        else
            records[#records + 1] = record
            record = {}
            if tick and #records % CullCsv.TICK_RECORDS == 0 and tick(#records, pos - 1, len) then
                return nil, CullCsv.STOPPED
            end
            if c == "" then
                break
            end
            pos = pos + (c == "\r" and 2 or 1)
            line = line + 1
            if pos > len then
                break
            end
        end
    end
    return records
end

return CullCsv
