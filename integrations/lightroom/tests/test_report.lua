-- Report reading: the JSON decoder, the CSV reader, rows and their edge cases.
local T = ...
local CullJson = require "CullJson"
local CullCsv = require "CullCsv"
local CullReport = require "CullReport"

T.test("json: flat object with every value type", function()
    local v = assert(CullJson.decode('{"a": 1, "b": -2.5e3, "c": "x", "d": null, "e": true, "f": false, "g": 0.25}'))
    T.eq(v.a, 1, "a"); T.eq(v.b, -2500, "b"); T.eq(v.c, "x", "c"); T.eq(v.d, nil, "null is absent")
    T.eq(v.e, true, "e"); T.eq(v.f, false, "f"); T.eq(v.g, 0.25, "g")
end)

T.test("json: escapes, \\u to UTF-8, surrogate pair to one 4-byte character", function()
    local v = assert(CullJson.decode([["q\"b\\s\/n\nt\tr\rB\bF\f|\u00e9|\u20ac|\ud83d\udcf7|\u0000"]]))
    T.eq(v, 'q"b\\s/n\nt\tr\rB\bF\f|\195\169|\226\130\172|\240\159\147\183|\0', "decoded")
    T.ok(CullReport.validUtf8(v), "valid UTF-8")
end)

T.test("json: a lone surrogate (a non-UTF-8 file name) decodes to invalid UTF-8", function()
    local v = assert(CullJson.decode([["/p/caf\udce9.jpg"]]))
    T.ok(not CullReport.validUtf8(v), "lone low surrogate is not valid UTF-8")
    local w = assert(CullJson.decode([["\ud800x"]]))
    T.ok(not CullReport.validUtf8(w), "lone high surrogate is not valid UTF-8")
end)

T.test("json: bad input returns nil and a message, never raises", function()
    for _, bad in ipairs({ "", "{", '{"a":}', '{"a":1,}', "[1,]", '"abc', '{"a":01}', '{"a":1} x', "nul",
                           '{"a":"\\x"}', '{"a":"\\u12"}', '"tab\there"', "-", "1.", "1e", "+1", "{'a':1}" }) do
        local v, err = CullJson.decode(bad)
        T.eq(v, nil, "value for " .. bad)
        T.ok(type(err) == "string", "message for " .. bad)
    end
end)

T.test("json: NaN and Infinity as Python writes them", function()
    local v = assert(CullJson.decode('{"a": NaN, "b": Infinity, "c": -Infinity}'))
    T.ok(v.a ~= v.a, "NaN"); T.eq(v.b, math.huge, "inf"); T.eq(v.c, -math.huge, "-inf")
end)

T.test("json: arrays and nesting", function()
    local v = assert(CullJson.decode('{"a": [1, null, {"b": []}], "c": {}}'))
    T.eq(v.a.n, 3, "array length"); T.eq(v.a[2], CullJson.null, "null in array"); T.eq(v.a[3].b.n, 0, "empty")
end)

T.test("csv: quotes, doubled quotes, commas, CRLF and LF inside fields, BOM", function()
    local text = '\239\187\191a,b,c\r\n"x, y","say ""hi""","two\nlines"\r\nplain,,"line\r\nbreak"\n'
    local records = assert(CullCsv.parse(text))
    T.eq(#records, 3, "records")
    T.eq(records[1][1], "a", "BOM dropped")
    T.eq(records[2][1], "x, y", "comma"); T.eq(records[2][2], 'say "hi"', "doubled quote")
    T.eq(records[2][3], "two\nlines", "newline"); T.eq(records[3][2], "", "empty cell")
    T.eq(records[3][3], "line\r\nbreak", "CRLF kept inside quotes")
end)

T.test("csv: no final newline, trailing empty cell, malformed input", function()
    local records = assert(CullCsv.parse("a,b\n1,"))
    T.eq(#records, 2, "records"); T.eq(records[2][2], "", "trailing empty cell")
    T.eq(CullCsv.parse('a\n"open'), nil, "unterminated quote")
    T.eq(CullCsv.parse('a\n"x"y'), nil, "text after closing quote")
    T.eq(CullCsv.parse('a\nx"y'), nil, "stray quote")
end)

local HEADER = "report_version,path,abs_path,verdict,score,kind,partner,partner_abs,size,mtime,error\n"

T.test("report: CSV rows, empty cell is null, numbers typed", function()
    local text = HEADER
        .. '1,a.jpg,/p/a.jpg,reject,0.01,defocus,a.CR3,/p/a.CR3,1234,1700000000.5,\n'
        .. '1,"b, ""1"".jpg","/p/b, ""1"".jpg",keep,0.99,sharp,,,99,1700000001,\n'
        .. '1,bad.jpg,/p/bad.jpg,,,,,,0,1700000002,truncated file\n'
    local report = assert(CullReport.parse(text, "scan.csv"))
    T.eq(report.format, "csv", "format"); T.eq(#report.rows, 3, "rows")
    local a, b, bad = report.rows[1], report.rows[2], report.rows[3]
    T.eq(a.absPath, "/p/a.jpg", "abs"); T.eq(a.score, 0.01, "score"); T.eq(a.size, 1234, "size")
    T.eq(a.partnerAbs, "/p/a.CR3", "partner"); T.eq(a.mtime, 1700000000.5, "mtime"); T.eq(a.error, nil, "error")
    T.eq(b.absPath, '/p/b, "1".jpg', "quoted path"); T.eq(b.partner, nil, "empty partner is null")
    T.eq(bad.verdict, nil, "error row verdict"); T.eq(bad.error, "truncated file", "error text")
    T.eq(bad.unmatchable, nil, "an error row is not unmatchable")
end)

T.test("report: JSONL rows, blank and broken lines counted, not fatal", function()
    local text = '{"report_version": 1, "path": "x.jpg", "abs_path": "/p/x.jpg", "verdict": "uncertain", '
        .. '"score": 0.4, "kind": "motion", "partner": null, "partner_abs": null, "size": 5, "mtime": 1.0, '
        .. '"error": null}\n\n{broken\n[1]\n{"path": "y.jpg", "abs_path": "/p/y.jpg", "verdict": "reject", "score": "high"}\r\n'
    local report = assert(CullReport.parse(text, "r.jsonl"))
    T.eq(#report.rows, 1, "rows"); T.eq(#report.problems, 3, "problems")
    T.contains(report.problems[1], "line 3", "line number"); T.contains(report.problems[3], "score", "bad score")
    T.eq(report.rows[1].kind, "motion", "kind")
end)

T.test("report: non-UTF-8 name is unmatchable, not a crash", function()
    local text = '{"report_version": 1, "path": "caf\\udce9.jpg", "abs_path": "/p/caf\\udce9.jpg", "verdict": "reject"}\n'
        .. '{"report_version": 1, "path": "ok.jpg", "abs_path": "/p/ok.jpg", "verdict": "reject", '
        .. '"partner_abs": "/p/\\udcff.CR3"}\n'
    local report = assert(CullReport.parse(text, "r.jsonl"))
    T.contains(report.rows[1].unmatchable, "UTF-8", "reason")
    T.eq(report.rows[2].unmatchable, nil, "good row"); T.eq(report.rows[2].partnerAbs, nil, "bad partner dropped")
    local csvText = HEADER .. "1,x,/p/caf\233.jpg,reject,0.1,defocus,,,1,1,\n"
    local csvReport = assert(CullReport.parse(csvText, "r.csv"))
    T.contains(csvReport.rows[1].unmatchable, "UTF-8", "raw Latin-1 byte in CSV")
end)

T.test("report: relative path without abs_path is unmatchable; absolute path is used", function()
    local text = '{"path": "rel/a.jpg", "verdict": "reject"}\n{"path": "/abs/b.jpg", "verdict": "reject"}\n'
        .. '{"path": "C:\\\\P\\\\c.jpg", "verdict": "keep"}\n{"path": "/p/d.jpg", "verdict": "maybe"}\n'
    local report = assert(CullReport.parse(text, "old.jsonl"))
    T.contains(report.rows[1].unmatchable, "absolute", "relative")
    T.eq(report.rows[2].absPath, "/abs/b.jpg", "absolute path as typed")
    T.eq(report.rows[3].absPath, "C:\\P\\c.jpg", "Windows path")
    T.contains(report.rows[4].unmatchable, "unknown verdict", "unknown verdict")
end)

T.test("report: newer format version refused with a clear message; empty refused", function()
    local v, err = CullReport.parse('{"report_version": 2, "abs_path": "/a.jpg", "verdict": "reject"}\n', "r.jsonl")
    T.eq(v, nil, "refused"); T.contains(err, "version 2", "message")
    local e, emptyErr = CullReport.parse("\n \n", "r.jsonl")
    T.eq(e, nil, "empty"); T.contains(emptyErr, "empty", "message")
    local n, noPath = CullReport.parse("a,b\n1,2\n", "r.csv")
    T.eq(n, nil, "no path column"); T.contains(noPath, "path", "message")
    local g, garbage = CullReport.parse("{nope\n{nope\n", "r.jsonl")
    T.eq(g, nil, "nothing readable"); T.contains(garbage, "line 1", "message")
end)

T.test("report: format chosen by suffix, else by content", function()
    local jsonl = '{"abs_path": "/a.jpg", "verdict": "keep"}\n'
    T.eq(assert(CullReport.parse(jsonl, "report.txt")).format, "jsonl", "sniffed JSON")
    T.eq(assert(CullReport.parse(HEADER .. "1,a,/a,keep,1,sharp,,,1,1,\n", "report")).format, "csv", "sniffed CSV")
end)

T.test("report: readFile reports a missing file", function()
    local v, err = CullReport.readFile(T.here .. "/does-not-exist.jsonl")
    T.eq(v, nil, "nil"); T.contains(err, "Cannot open", "message")
end)

T.test("json: decodeAt reads one line in place, same values and messages as decode of that line", function()
    local lines = { '{"a": 1, "b": "x\\u00e9", "c": [1, {"d": null}]}', '  {"a": "\\ud83d\\udcf7"}  ', '\t{"a":\r1}',
        "{broken", '{"a": 1', '{"a": "open', '{"a": 1} x', '{"a": "\\', '{"a": "\\u12', "[1,", "tru", "-", '"\\ud800',
        '{"a": 1,', "1e" }
    for _, line in ipairs(lines) do
        for _, around in ipairs({ { "", "" }, { "{}\n", "\n{\"z\": 2}" }, { "x\n", "\r\n}\n" }, { "[\n", "\n]" } }) do
            local text = around[1] .. line .. around[2]
            local first = #around[1] + 1
            local last = first + #line - 1
            local want, wantErr = CullJson.decode(line)
            local got, gotErr = CullJson.decodeAt(text, first, last)
            local what = string.format("%q in %q", line, text)
            T.eq(gotErr, wantErr, "message for " .. what)
            T.eq(type(got), type(want), "type for " .. what)
            if type(want) == "table" then
                T.eq(got.a, want.a, "value for " .. what)
            end
        end
    end
end)

T.test("report: JSON Lines with CRLF, a BOM, blank and space-only lines, no final newline", function()
    local row = '{"report_version": 1, "abs_path": "/p/%d.jpg", "verdict": "reject"}'
    local text = "\239\187\191" .. row:format(1) .. "\r\n\r\n \t \n" .. row:format(2) .. "\n{bad\r\n" .. row:format(3)
    local report = assert(CullReport.parse(text, "r.jsonl"))
    T.eq(#report.rows, 3, "rows"); T.eq(report.rows[3].absPath, "/p/3.jpg", "last line without newline")
    T.eq(report.rows[1].line, 1, "line 1 after the BOM"); T.eq(report.rows[2].line, 4, "line numbers count blanks")
    T.eq(#report.problems, 1, "problems"); T.contains(report.problems[1], "line 5", "broken line's number")
end)

--- A JSON Lines report of n rows as cull writes them for a card of files LibRaw cannot read: lines of
-- one length that differ only in the photo number. Built from short pieces, so no string per line
-- is made here either.
local function bigReport(n, broken)
    local parts, k = {}, 0
    local function put(s) k = k + 1; parts[k] = s end
    for i = 1, n do
        local number, folder = string.format("%06d", i), tostring(100 + i % 50)
        put('{"path": "DSC') put(number)
        if i == broken then
            put('.ARW", "abs_path": \n')
        else
            put('.ARW", "abs_path": "/Volumes/Fotos/2024/Card ') put(folder) put('/DSC') put(number)
            put('.ARW", "verdict": null, "score": null, "kind": null, "partner": null, "partner_abs": null, ')
            put('"size": 0, "mtime": 1700000000.0, "error": "not a RAW file LibRaw can read (unsupported or corrupt)", ')
            put('"reason": null, "report_version": 1, "burst": null, "burst_rank": null, "burst_size": null, ')
            put('"protected": null}\n')
        end
    end
    return table.concat(parts)
end

-- A whole-library report. Read as one string per line, this took 84 s under lua5.1 where it was
-- written (every line is interned, and such lines share a hash: each new line was compared with the
-- lines before it); read in place, about 3 s. No time is asserted here, only what was read.
T.test("report: a 100 000-line JSON Lines report is read whole, in place, with progress ticks", function()
    local n, broken = 100000, 61234
    local ticks = {}
    local report = assert(CullReport.parse(bigReport(n, broken), "library.jsonl", function(lineNo)
        ticks[#ticks + 1] = lineNo
    end))
    T.eq(#report.rows, n - 1, "rows"); T.eq(#report.problems, 1, "the broken line")
    T.contains(report.problems[1], "line " .. broken .. ":", "its number")
    local last = report.rows[n - 1]
    T.eq(last.absPath, "/Volumes/Fotos/2024/Card 100/DSC100000.ARW", "last row"); T.eq(last.line, n, "its line")
    T.eq(last.verdict, nil, "no verdict"); T.contains(last.error, "LibRaw", "error text")
    T.eq(report.rows[broken].line, broken + 1, "rows after it keep their line numbers")
    T.eq(#ticks, n / CullReport.TICK_LINES, "a tick every " .. CullReport.TICK_LINES .. " lines")
end)

--- A CSV report of n rows (a header, then one record per photo).
local function csvReport(n)
    local lines = { "report_version,path,abs_path,verdict,score,kind,partner,partner_abs,size,mtime,error" }
    for i = 1, n do
        lines[#lines + 1] = string.format("1,IMG_%05d.JPG,/p/IMG_%05d.JPG,reject,0.02,motion,,,1,1,", i, i)
    end
    return table.concat(lines, "\r\n") .. "\r\n"
end

--- Parse text with a tick that records each fraction and asks to stop once stopWhen(fraction) is true.
local function parseTicking(text, name, stopWhen)
    local fractions = {}
    local report, err = CullReport.parse(text, name, function(_, fraction)
        fractions[#fractions + 1] = fraction
        return stopWhen ~= nil and stopWhen(fraction)
    end)
    return report, err, fractions
end

local function assertRising(fractions, what)
    local last = 0
    for i, f in ipairs(fractions) do
        T.ok(f >= last and f <= 1, string.format("%s: fraction %d is %s after %s", what, i, tostring(f), tostring(last)))
        last = f
    end
end

T.test("report: the read's tick gets a fraction that only rises, to the end (JSON Lines and CSV)", function()
    local report, err, fractions = parseTicking(bigReport(2000), "big.jsonl")
    T.eq(err, nil, "read"); T.eq(#report.rows, 2000, "rows")
    T.eq(#fractions, 2000 / CullReport.TICK_LINES, "ticks"); assertRising(fractions, "jsonl")
    T.eq(fractions[#fractions], 1, "the last line is the whole file")
    local csv, csvErr, csvFractions = parseTicking(csvReport(1500), "big.csv")
    T.eq(csvErr, nil, "csv read"); T.eq(#csv.rows, 1500, "csv rows")
    T.ok(#csvFractions >= 4, "ticks while splitting records and while making rows: " .. #csvFractions)
    assertRising(csvFractions, "csv")
    T.ok(csvFractions[1] <= 0.5 and csvFractions[#csvFractions] > 0.5, "both halves of the read")
end)

T.test("report: a tick that returns true stops the read: nil and CullReport.CANCELED, never a message", function()
    local report, err, fractions = parseTicking(bigReport(2000), "big.jsonl", function(f) return f > 0.4 end)
    T.eq(report, nil, "no report"); T.eq(err, CullReport.CANCELED, "cancelled")
    T.ok(#fractions < 2000 / CullReport.TICK_LINES, "stopped early: " .. #fractions .. " ticks")
    for _, stopAt in ipairs({ 0, 0.6 }) do -- while splitting records, then while making rows
        local csv, csvErr = parseTicking(csvReport(1500), "big.csv", function(f) return f > stopAt end)
        T.eq(csv, nil, "no csv report"); T.eq(csvErr, CullReport.CANCELED, "csv cancelled past " .. stopAt)
    end
    local records, why = CullCsv.parse(csvReport(600), function() return true end)
    T.eq(records, nil, "CSV reader stops"); T.eq(why, CullCsv.STOPPED, "says why")
end)
