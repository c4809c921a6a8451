--[[ Test runner for the cull Lightroom plug-in (plain Lua 5.1, no Lightroom).

  lua5.1 integrations/lightroom/tests/run.lua            run every test, print "ok NAME" / "FAIL NAME: why"
  lua5.1 integrations/lightroom/tests/run.lua dump FILE  print the report's rows, one field per line
  lua5.1 integrations/lightroom/tests/run.lua e2e FILE [pairs]
        import every path of the report into a stand-in catalog (with "pairs": a RAW+JPEG shot as one
        photo under the RAW's path), run "Apply cull verdicts…", print each photo's flag and label
Exit status 0 only when every test passed.
]]

local here = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
local pluginDir = here .. "/../cull.lrplugin"
package.path = pluginDir .. "/?.lua;" .. here .. "/?.lua;" .. package.path

local T = { tests = {}, pluginDir = pluginDir, here = here, tempFiles = {} }

function T.test(name, fn)
    T.tests[#T.tests + 1] = { name = name, fn = fn }
end

local function show(v)
    if type(v) == "string" then
        return string.format("%q", v)
    end
    return tostring(v)
end

function T.eq(actual, expected, what)
    if actual ~= expected then
        error(string.format("%s: expected %s, got %s", what or "value", show(expected), show(actual)), 2)
    end
end

function T.ok(cond, what)
    if not cond then
        error(what or "assertion failed", 2)
    end
end

function T.raises(fn, pattern, what)
    local ok, err = pcall(fn)
    if ok then
        error((what or "call") .. ": expected an error", 2)
    end
    if pattern and not tostring(err):find(pattern) then
        error(string.format("%s: error %s does not match %s", what or "call", show(tostring(err)), show(pattern)), 2)
    end
end

function T.contains(haystack, needle, what)
    if not tostring(haystack):find(needle, 1, true) then
        error(string.format("%s: %s not found in %s", what or "text", show(needle), show(haystack)), 2)
    end
end

--- Hex of a string, so any bytes survive the trip to pytest.
local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function dump(file)
    local CullReport = require "CullReport"
    local report, err = CullReport.readFile(file)
    if not report then
        print("error " .. hex(err))
        return 0
    end
    print("format " .. report.format)
    print("problems " .. #report.problems)
    for i, row in ipairs(report.rows) do
        for _, key in ipairs({ "version", "path", "absPath", "partner", "partnerAbs", "verdict", "score",
                               "kind", "size", "mtime", "error", "unmatchable" }) do
            local v = row[key]
            if type(v) == "number" then
                print(string.format("row %d %s n %.17g", i, key, v))
            elseif type(v) == "string" then
                print(string.format("row %d %s s %s", i, key, hex(v)))
            end
        end
    end
    return 0
end

local function e2e(file, asPairs)
    local sdk = require "sdk"
    local world = sdk.new { pluginDir = pluginDir }
    local CullReport = require "CullReport"
    local report = assert(CullReport.readFile(file))
    for _, row in ipairs(report.rows) do
        -- "pairs": a RAW+JPEG shot is one catalog photo under the RAW's path (LrC's default import)
        local path = asPairs and row.partnerAbs or row.absPath
        if path and not row.unmatchable and not world.catalog.byPath[path] then
            world.catalog:addTestPhoto { path = path }
        end
    end
    world.answers.runOpenPanel = { { file } }
    world.answers.presentModalDialog = { "ok" }
    require("CullGlue").applyCommand()
    local failures = world:runTasks()
    for _, f in ipairs(failures) do print("taskerror " .. hex(f)) end
    for _, e in ipairs(world.errors) do print("taskerror " .. hex(e)) end
    print("steps " .. #world:stepsNamed("Apply cull verdicts"))
    for _, photo in ipairs(world.catalog.photos) do
        print(string.format("photo %s %d %s %s", hex(photo.path), photo.pick, photo.label,
            tostring(photo.props.verdict)))
    end
    return 0
end

local function runAll()
    for _, file in ipairs({ "test_report.lua", "test_plan.lua", "test_apply.lua", "test_glue.lua" }) do
        local chunk = assert(loadfile(here .. "/" .. file))
        chunk(T)
    end
    local failed = 0
    for _, t in ipairs(T.tests) do
        local ok, err = xpcall(t.fn, debug.traceback)
        if ok then
            print("ok " .. t.name)
        else
            failed = failed + 1
            print("FAIL " .. t.name .. ": " .. tostring(err))
        end
    end
    for _, path in ipairs(T.tempFiles) do
        os.remove(path)
    end
    print(string.format("%d passed, %d failed", #T.tests - failed, failed))
    return failed == 0 and 0 or 1
end

local mode = arg and arg[1]
local status
if mode == "dump" then
    status = dump(arg[2])
elseif mode == "e2e" then
    status = e2e(arg[2], arg[3] == "pairs")
else
    status = runAll()
end
os.exit(status)
