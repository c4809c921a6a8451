--[[ CullReport: read the file `cull scan --report X.jsonl|X.csv` writes (report format version 1).

parse(text, name) -> report = {
    format = "jsonl" | "csv",
    rows = { row, ... },          -- one per photo, in file order
    problems = { "line 7: ...", ... },  -- lines that could not be read (skipped, counted)
}
row = { line, version, path, absPath, partner, partnerAbs, verdict, score, kind, size, mtime,
        error, unmatchable }      -- unmatchable: nil, or why no catalog lookup is possible
Returns nil, message when the whole file is unusable (empty, newer major version, no path column),
and nil, CullReport.CANCELED when the caller's tick asked to stop.
No SDK use.
]]

local CullJson = require "CullJson"
local CullCsv = require "CullCsv"

local CullReport = {}

CullReport.SUPPORTED_VERSION = 1
CullReport.TICK_LINES = 500 -- parse(text, name, tick) calls tick(lineNo, fraction) this often
CullReport.CANCELED = "The read was cancelled."
-- A CSV report is split into records first, then made into rows: each half of the read's progress.
local CSV_SPLIT = 0.5

local VERDICTS = { keep = true, uncertain = true, reject = true }
local INTEGER_FIELDS = { report_version = true, size = true }
local NUMBER_FIELDS = { score = true, mtime = true }

--- True when s is well-formed UTF-8 (no surrogates, no overlongs, nothing above U+10FFFF).
function CullReport.validUtf8(s)
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        if c < 0x80 then
            i = i + 1
        else
            local need, min
            if c >= 0xC2 and c <= 0xDF then need, min = 1, 0x80
            elseif c >= 0xE0 and c <= 0xEF then need, min = 2, 0x800
            elseif c >= 0xF0 and c <= 0xF4 then need, min = 3, 0x10000
            else return false end
            if i + need > n then return false end
            local cp = c % (2 ^ (6 - need))
            for k = 1, need do
                local cc = s:byte(i + k)
                if cc < 0x80 or cc > 0xBF then return false end
                cp = cp * 64 + (cc - 0x80)
            end
            if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return false end
            i = i + need + 1
        end
    end
    return true
end

--- True for an absolute POSIX path, a drive path (C:\ or C:/) or a UNC path (\\server\share).
function CullReport.isAbsolute(p)
    return type(p) == "string" and (p:sub(1, 1) == "/" or p:match("^%a:[\\/]") ~= nil or p:sub(1, 2) == "\\\\")
end

local function coerce(key, value)
    if value == nil then
        return nil
    end
    if INTEGER_FIELDS[key] or NUMBER_FIELDS[key] then
        local n = tonumber(value)
        if n == nil then
            return nil, string.format("%s is not a number", key)
        end
        return n
    end
    if type(value) ~= "string" then
        return nil, string.format("%s is not a string", key)
    end
    return value
end

--- Build a row from one decoded record (key -> raw value). Returns row or nil, message.
local function makeRow(record, lineNo)
    local fields = {}
    for _, key in ipairs({ "report_version", "path", "abs_path", "partner", "partner_abs", "verdict",
                           "score", "kind", "size", "mtime", "error", "protected" }) do
        local value, err = coerce(key, record[key])
        if err then
            return nil, err
        end
        fields[key] = value
    end
    local row = {
        line = lineNo, version = fields.report_version, path = fields.path, absPath = fields.abs_path,
        partner = fields.partner, partnerAbs = fields.partner_abs, verdict = fields.verdict,
        score = fields.score, kind = fields.kind, size = fields.size, mtime = fields.mtime,
        error = fields.error, protected = fields.protected,
    }
    if row.absPath == nil and CullReport.isAbsolute(row.path) then
        row.absPath = row.path -- a report written before abs_path existed, scanned with an absolute path
    end
    if row.partnerAbs == nil and CullReport.isAbsolute(row.partner) then
        row.partnerAbs = row.partner
    end
    if row.verdict ~= nil and not VERDICTS[row.verdict] then
        row.unmatchable = string.format("unknown verdict %q", row.verdict)
    elseif row.absPath == nil then
        row.unmatchable = row.path and "the report has no absolute path for it (re-run cull scan with this cull)"
            or "the row has no path"
    elseif not CullReport.validUtf8(row.absPath) then
        row.unmatchable = "its file name is not valid UTF-8"
    end
    if row.partnerAbs ~= nil and not CullReport.validUtf8(row.partnerAbs) then
        row.partnerAbs = nil
    end
    return row
end

local function checkVersion(report)
    for _, row in ipairs(report.rows) do
        if row.version ~= nil and row.version > CullReport.SUPPORTED_VERSION then
            return nil, string.format(
                "This report has format version %d; this plug-in reads version %d. Update the plug-in.",
                row.version, CullReport.SUPPORTED_VERSION)
        end
    end
    return report
end


--- Add the row made from a decoded record, or say why it is not one (where: "line" or "record").
local function addRow(report, record, number, where)
    local row, rowErr = makeRow(record, number)
    if row then
        report.rows[#report.rows + 1] = row
    else
        report.problems[#report.problems + 1] = string.format("%s %d: %s", where, number, rowErr)
    end
end

--- JSON Lines: the newlines are found by position and each record is decoded in place
-- (CullJson.decodeAt). No string is made per line: Lua 5.1 interns every string, and lines of one
-- report look alike, so a copy per line made a 100 000-line report take minutes instead of seconds.
local function parseJsonl(text, tick)
    local report = { format = "jsonl", rows = {}, problems = {} }
    local find, byte = string.find, string.byte
    local lineNo, pos, size = 0, 1, #text
    while pos <= size do
        local newline = find(text, "\n", pos, true)
        local first, last = pos, (newline or size + 1) - 1
        pos = last + 2
        lineNo = lineNo + 1
        if lineNo == 1 and text:sub(1, 3) == "\239\187\191" then
            first = 4
        end
        if last >= first and byte(text, last) == 13 then
            last = last - 1 -- CRLF
        end
        local _, blank = find(text, "^[ \t\r\v\f]*", first) -- stops at the newline
        if blank < last then
            local value, err = CullJson.decodeAt(text, first, last)
            if value == nil then
                report.problems[#report.problems + 1] = string.format("line %d: %s", lineNo, err)
            elseif type(value) ~= "table" or value.n ~= nil then
                report.problems[#report.problems + 1] = string.format("line %d: not a JSON object", lineNo)
            else
                addRow(report, value, lineNo, "line")
            end
        end
        if tick and lineNo % CullReport.TICK_LINES == 0 and tick(lineNo, math.min(pos - 1, size) / size) then
            return nil, CullReport.CANCELED
        end
    end
    return report
end

--- The CSV reader's tick (records, bytes read, bytes in all) as the first half of the read's tick.
local function splitTick(tick)
    if tick == nil then
        return nil
    end
    return function(records, done, total)
        return tick(records, CSV_SPLIT * done / total)
    end
end

local function parseCsv(text, tick)
    local records, err = CullCsv.parse(text, splitTick(tick))
    if err == CullCsv.STOPPED then
        return nil, CullReport.CANCELED
    end
    if not records then
        return nil, "The CSV report cannot be read: " .. err
    end
    local report = { format = "csv", rows = {}, problems = {} }
    local header = records[1]
    if not header then
        return report
    end
    local hasPath = false
    for _, name in ipairs(header) do
        hasPath = hasPath or name == "path" or name == "abs_path"
    end
    if not hasPath then
        return nil, "The CSV report has no path column (is it a cull report?)"
    end
    for r = 2, #records do
        local cells, record = records[r], {}
        if not (#cells == 1 and cells[1] == "") then -- a blank line
            if #cells ~= #header then
                report.problems[#report.problems + 1] = string.format(
                    "record %d: %d cells for %d columns", r, #cells, #header)
            else
                for c, name in ipairs(header) do
                    if cells[c] ~= "" then -- an empty cell is null
                        record[name] = cells[c]
                    end
                end
                addRow(report, record, r, "record")
            end
        end
        if tick and r % CullReport.TICK_LINES == 0 and tick(r, CSV_SPLIT + (1 - CSV_SPLIT) * r / #records) then
            return nil, CullReport.CANCELED
        end
    end
    return report
end

--- Parse a report's text; name (the file name) picks the format by suffix, else the content does.
-- tick (optional) is called every TICK_LINES lines (records of a CSV report) with the line number and
-- the fraction of the read done (0..1, never decreasing): inside Lightroom it moves a progress bar
-- and yields, so a long read does not freeze the user interface. When tick returns true (the user
-- cancelled), the read stops and parse returns nil, CullReport.CANCELED.
function CullReport.parse(text, name, tick)
    if type(text) ~= "string" or not text:match("%S") then
        return nil, "The report is empty."
    end
    local lower = (name or ""):lower()
    local report, err
    if lower:match("%.csv$") then
        report, err = parseCsv(text, tick)
    elseif lower:match("%.jsonl$") or lower:match("%.json$") or text:match("^[\239\187\191%s]*{") then
        report, err = parseJsonl(text, tick)
    else
        report, err = parseCsv(text, tick)
    end
    if not report then
        return nil, err
    end
    if #report.rows == 0 and #report.problems > 0 then
        return nil, "No row of the report could be read: " .. report.problems[1]
    end
    return checkVersion(report)
end

--- Read and parse a report file (plain io: works in Lightroom and in plain Lua).
function CullReport.readFile(path, tick)
    local handle, openErr = io.open(path, "rb")
    if not handle then
        return nil, "Cannot open the report: " .. tostring(openErr)
    end
    local text = handle:read("*a")
    handle:close()
    return CullReport.parse(text, path, tick)
end

return CullReport
