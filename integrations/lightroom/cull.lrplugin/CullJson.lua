--[[ CullJson: a small, strict JSON decoder (RFC 8259) in plain Lua 5.1.

decode(text) returns the value, or nil and an error message with the byte offset.
decodeAt(text, first, last) decodes the value in text's bytes first..last (one line of a JSON Lines
file) without copying that line out: a big report is read in place, line by line.
NaN, Infinity and -Infinity (which Python's json module writes for such floats) are accepted.
Objects become tables, arrays become tables with n = length, null becomes CullJson.null
inside arrays and a missing key inside objects. \uXXXX escapes become UTF-8; a surrogate
pair becomes one 4-byte character. A lone surrogate (Python writes one for a file name
that is not valid UTF-8) is kept as its 3-byte WTF-8 form, which is *not* valid UTF-8:
CullUtf8.valid() then tells the caller the string cannot be a real path. No SDK use.
]]

local CullJson = {}

CullJson.null = setmetatable({}, { __tostring = function() return "null" end })

local byte, sub, find, char = string.byte, string.sub, string.find, string.char

local ESCAPES = {
    [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f",
    [110] = "\n", [114] = "\r", [116] = "\t",
}

--- UTF-8 (or WTF-8 for surrogates) bytes of one code point.
function CullJson.encodeCodePoint(cp)
    if cp < 0x80 then
        return char(cp)
    elseif cp < 0x800 then
        return char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
    elseif cp < 0x10000 then
        return char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
    end
    return char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
        0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- The span being decoded: byte offsets in messages count from origin + 1, and nothing past limit is
-- read. Set by decode / decodeAt on entry; nothing here yields, so no two decodes interleave.
local origin, limit = 0, 0
-- Whitespace: a whole JSON text may span lines; a JSON Lines record never crosses its newline.
local SPACE, LINE_SPACE = "^[ \t\r\n]*", "^[ \t\r]*"
local space = SPACE

local function fail(pos, message)
    error({ cullJson = true, message = string.format("%s at byte %d", message, pos - origin) }, 0)
end

local function skipSpace(text, pos)
    local _, last = find(text, space, pos)
    if last > limit then
        return limit + 1 -- a CR that ends a CRLF line is not part of the record
    end
    return last + 1
end

local function readHex4(text, pos)
    local hex = sub(text, pos, pos + 3)
    if not hex:match("^%x%x%x%x$") then
        fail(pos, "bad \\u escape")
    end
    return tonumber(hex, 16)
end

local function parseString(text, pos)
    -- pos is at the opening quote
    local parts, i = nil, pos + 1
    while true do
        local stop = find(text, '["\\%z\1-\31]', i)
        if not stop or stop > limit then
            fail(pos, "unterminated string")
        end
        local c = byte(text, stop)
        if c == 34 and parts == nil then
            return sub(text, i, stop - 1), stop + 1 -- no escape: one substring, no table
        end
        parts = parts or {}
        parts[#parts + 1] = sub(text, i, stop - 1)
        if c == 34 then
            return table.concat(parts), stop + 1
        elseif c < 32 then
            fail(stop, "control character in string")
        end
        local e = byte(text, stop + 1)
        if e == 117 then -- \u
            local cp = readHex4(text, stop + 2)
            local nextPos = stop + 6
            if cp >= 0xD800 and cp <= 0xDBFF and sub(text, nextPos, nextPos + 1) == "\\u" then
                local low = readHex4(text, nextPos + 2)
                if low >= 0xDC00 and low <= 0xDFFF then
                    cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
                    nextPos = nextPos + 6
                end
            end
            parts[#parts + 1] = CullJson.encodeCodePoint(cp)
            i = nextPos
        elseif e and ESCAPES[e] then
            parts[#parts + 1] = ESCAPES[e]
            i = stop + 2
        else
            fail(stop, "bad escape")
        end
    end
end

local parseValue

local function parseNumber(text, pos)
    local s, e = find(text, "^-?%d+", pos)
    if not s then
        fail(pos, "unexpected character")
    end
    local digits = sub(text, s, e)
    if digits:match("^-?0%d") then
        fail(pos, "leading zero in number")
    end
    local fs, fe = find(text, "^%.%d+", e + 1)
    if fs then e = fe elseif sub(text, e + 1, e + 1) == "." then fail(e + 1, "bad fraction") end
    local xs, xe = find(text, "^[eE][-+]?%d+", e + 1)
    if xs then e = xe elseif sub(text, e + 1, e + 1):match("[eE]") then fail(e + 1, "bad exponent") end
    return tonumber(sub(text, pos, e)), e + 1
end

local function parseArray(text, pos, depth)
    local result, n = {}, 0
    pos = skipSpace(text, pos + 1)
    if sub(text, pos, pos) == "]" then
        result.n = 0
        return result, pos + 1
    end
    while true do
        local value
        value, pos = parseValue(text, pos, depth + 1)
        n = n + 1
        result[n] = value
        pos = skipSpace(text, pos)
        local c = sub(text, pos, pos)
        if c == "]" then
            result.n = n
            return result, pos + 1
        elseif c ~= "," then
            fail(pos, "expected ',' or ']'")
        end
        pos = skipSpace(text, pos + 1)
    end
end

local function parseObject(text, pos, depth)
    local result = {}
    pos = skipSpace(text, pos + 1)
    if sub(text, pos, pos) == "}" then
        return result, pos + 1
    end
    while true do
        if sub(text, pos, pos) ~= '"' then
            fail(pos, "expected a string key")
        end
        local key, value
        key, pos = parseString(text, pos)
        pos = skipSpace(text, pos)
        if sub(text, pos, pos) ~= ":" then
            fail(pos, "expected ':'")
        end
        value, pos = parseValue(text, skipSpace(text, pos + 1), depth + 1)
        if value ~= CullJson.null then
            result[key] = value
        end
        pos = skipSpace(text, pos)
        local c = sub(text, pos, pos)
        if c == "}" then
            return result, pos + 1
        elseif c ~= "," then
            fail(pos, "expected ',' or '}'")
        end
        pos = skipSpace(text, pos + 1)
    end
end

parseValue = function(text, pos, depth)
    if depth > 64 then
        fail(pos, "nested too deeply")
    end
    if pos > limit then
        fail(pos, "unexpected end of text")
    end
    local c = sub(text, pos, pos)
    if c == "{" then
        return parseObject(text, pos, depth)
    elseif c == "[" then
        return parseArray(text, pos, depth)
    elseif c == '"' then
        return parseString(text, pos)
    elseif sub(text, pos, pos + 3) == "true" then
        return true, pos + 4
    elseif sub(text, pos, pos + 4) == "false" then
        return false, pos + 5
    elseif sub(text, pos, pos + 3) == "null" then
        return CullJson.null, pos + 4
    elseif sub(text, pos, pos + 2) == "NaN" then -- Python's json writes these (not RFC 8259)
        return 0 / 0, pos + 3
    elseif sub(text, pos, pos + 7) == "Infinity" then
        return math.huge, pos + 8
    elseif sub(text, pos, pos + 8) == "-Infinity" then
        return -math.huge, pos + 9
    elseif c == "" then
        fail(pos, "unexpected end of text")
    end
    return parseNumber(text, pos)
end

local function decodeSpan(text, first, last)
    local v, p = parseValue(text, skipSpace(text, first), 0)
    p = skipSpace(text, p)
    if p <= last then
        fail(p, "trailing characters")
    end
    return v, p
end

local function protected(text, first, last)
    local ok, value, pos = pcall(decodeSpan, text, first, last)
    if ok then
        return value, pos - origin
    end
    if type(value) == "table" and value.cullJson then
        return nil, value.message
    end
    error(value, 0) -- a bug in this decoder, not bad input
end

--- Decode one JSON text; returns value or nil, message (never raises for bad input).
function CullJson.decode(text)
    if type(text) ~= "string" then
        return nil, "not a string"
    end
    origin, limit, space = 0, #text, SPACE
    return protected(text, 1, #text)
end

--- Decode the JSON text in bytes first..last of text: one JSON Lines record, so no newline inside,
-- and the byte after last is a newline, the CR of a CRLF, or the end of text (the caller finds the
-- newlines). Same results and messages as decode(text:sub(first, last)), offsets counted from first,
-- but no copy of the line is made: Lua 5.1 interns every string, and a copy per line of a large
-- report costs time that grows faster than the report.
function CullJson.decodeAt(text, first, last)
    if type(text) ~= "string" then
        return nil, "not a string"
    end
    origin, limit, space = first - 1, last, LINE_SPACE
    return protected(text, first, last)
end

return CullJson
