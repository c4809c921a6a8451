-- The menu commands end to end against the stand-in SDK: Info.lua, apply, preview, remap, undo.
local T = ...
local sdk = require "sdk"

local function writeTemp(text, suffix)
    local base = os.tmpname() -- created by mkstemp; removed with ours after the run
    local path = base .. (suffix or ".jsonl")
    T.tempFiles[#T.tempFiles + 1] = base
    T.tempFiles[#T.tempFiles + 1] = path
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    return path
end

local function jsonRow(absPath, verdict, extra)
    return string.format('{"report_version": 1, "path": "%s", "abs_path": "%s", "verdict": %s, "score": 0.1, '
        .. '"kind": "defocus", "partner": null, "partner_abs": %s, "size": 10, "mtime": 1700000000.0, "error": null}',
        absPath, absPath, verdict and ('"' .. verdict .. '"') or "null", extra or "null")
end

--- Texts of every static_text in a dialog (the preview's counts live there).
local function dialogText(dialog)
    local parts = {}
    local function walk(view)
        if type(view) ~= "table" then return end
        if view.viewType == "static_text" then parts[#parts + 1] = view.args.title end
        for _, child in ipairs(view.args or {}) do walk(child) end
    end
    walk(dialog.args.contents)
    return table.concat(parts, "\n")
end

local function runMenu(world, file)
    local chunk = assert(loadfile(T.pluginDir .. "/" .. file))
    chunk()
    local failures = world:runTasks()
    T.eq(failures[1], nil, "task failure")
    T.eq(world.errors[1], nil, "error dialog")
    return require("CullGlue").lastOutcome
end

local function standardWorld(prefs)
    local world = sdk.new { pluginDir = T.pluginDir, prefs = prefs }
    local c = world.catalog
    c:addTestPhoto { path = "/Volumes/nas/blur.jpg" }
    c:addTestPhoto { path = "/Volumes/nas/soft.jpg" }
    c:addTestPhoto { path = "/Volumes/nas/sharp.jpg" }
    c:addTestPhoto { path = "/Volumes/nas/mine.jpg", pick = 1 }
    c:addTestPhoto { path = "/Volumes/nas/starred.jpg", rating = 3 }
    c:addTestPhoto { path = "/Volumes/nas/red.jpg", label = "red" }
    local report = writeTemp(table.concat({
        jsonRow("/Volumes/nas/blur.jpg", "reject"), jsonRow("/Volumes/nas/soft.jpg", "uncertain"),
        jsonRow("/Volumes/nas/sharp.jpg", "keep"), jsonRow("/Volumes/nas/mine.jpg", "reject"),
        jsonRow("/Volumes/nas/starred.jpg", "reject"), jsonRow("/Volumes/nas/red.jpg", "uncertain"),
        jsonRow("/Volumes/nas/gone.jpg", "reject"), jsonRow("/Volumes/nas/broken.jpg", nil),
    }, "\n") .. "\n")
    return world, report
end

T.test("Info.lua: SDK versions, identifier, both menu items, files present, every file compiles", function()
    local info = dofile(T.pluginDir .. "/Info.lua")
    T.ok(info.LrSdkVersion >= 6.0, "LrSdkVersion"); T.ok(info.LrSdkMinimumVersion >= 6.0, "minimum")
    T.ok(info.LrSdkMinimumVersion <= info.LrSdkVersion, "minimum <= version")
    T.ok(type(info.LrToolkitIdentifier) == "string" and info.LrToolkitIdentifier:find("%."), "identifier")
    T.ok(type(info.LrPluginName) == "string", "name")
    local titles = {}
    for _, item in ipairs(info.LrLibraryMenuItems) do
        titles[#titles + 1] = item.title
        T.ok(io.open(T.pluginDir .. "/" .. item.file) ~= nil, "menu file " .. item.file)
    end
    T.eq(titles[1], "Apply cull verdicts…", "apply item"); T.eq(titles[2], "Undo cull verdicts…", "undo item")
    T.ok(io.open(T.pluginDir .. "/" .. info.LrMetadataProvider) ~= nil, "metadata provider")
    for _, name in ipairs({ "CullJson", "CullCsv", "CullReport", "CullPaths", "CullPlan", "CullApply", "CullGlue",
                            "CullMetadata", "ApplyMenu", "UndoMenu", "Info" }) do
        T.ok(loadfile(T.pluginDir .. "/" .. name .. ".lua"), name .. " compiles")
    end
end)

T.test("apply command: preview counts, then flags and labels; hand-set photos untouched", function()
    local world, report = standardWorld()
    world.answers.runOpenPanel = { { report } }
    world.answers.presentModalDialog = { "ok" }
    local outcome = runMenu(world, "ApplyMenu.lua")
    T.eq(outcome.status, "applied", "status")
    local text = dialogText(world.dialogs[2])
    T.contains(text, "8 photos in the report; 6 matched in this catalog, 1 not in the catalog", "counts")
    T.contains(text, "Will flag 1 photo as Rejected", "reject count")
    T.contains(text, "Will give 1 photo the yellow label", "label count")
    T.contains(text, "never changed: 3", "hand-set count")
    T.contains(text, "Not judged by cull (unreadable files): 1", "error rows")
    local p = world.catalog.byPath
    T.eq(p["/Volumes/nas/blur.jpg"].pick, -1, "blur rejected")
    T.eq(p["/Volumes/nas/soft.jpg"].label, "yellow", "soft labelled")
    T.eq(p["/Volumes/nas/sharp.jpg"].pick, 0, "sharp untouched")
    T.eq(p["/Volumes/nas/mine.jpg"].pick, 1, "hand pick kept")
    T.eq(p["/Volumes/nas/starred.jpg"].pick, 0, "rated photo not rejected")
    T.eq(p["/Volumes/nas/starred.jpg"].rating, 3, "rating kept")
    T.eq(p["/Volumes/nas/red.jpg"].label, "red", "hand label kept")
    T.eq(#world:stepsNamed("Apply cull verdicts"), 1, "one step")
    T.contains(world.messages[#world.messages].info, "Flag: Rejected", "closing message says how to filter")
end)

T.test("apply command: every look-up happens before the first write access", function()
    local world, report = standardWorld()
    world.answers.runOpenPanel = { { report } }
    world.answers.presentModalDialog = { "ok" }
    runMenu(world, "ApplyMenu.lua")
    local firstWrite, lastFind, firstDialog
    for i, e in ipairs(world.events) do
        if e[1] == "write" and not firstWrite then firstWrite = i end
        if e[1] == "find" then lastFind = i end
        if e[1] == "dialog" and e[2] == "presentModalDialog" and not firstDialog then firstDialog = i end
    end
    T.ok(firstWrite and lastFind and lastFind < firstWrite, "finds before writes")
    T.ok(world.events[1][1] == "dialog" and firstDialog < firstWrite, "preview before writes")
end)

T.test("apply command: smart collections created on the searchable verdict field, reused on re-run", function()
    local world, report = standardWorld()
    world.answers.runOpenPanel = { { report }, { report } }
    world.answers.presentModalDialog = { "ok", "ok" }
    runMenu(world, "ApplyMenu.lua")
    local rejects = world.catalog.smartCollections["cull: Rejects"]
    T.ok(rejects and world.catalog.smartCollections["cull: Uncertain"], "both created")
    T.eq(rejects.searchDesc[1].criteria, "sdktext:" .. _PLUGIN.id .. ".verdict", "plug-in field")
    T.eq(rejects.searchDesc[2].criteria, "pick", "still rejected")
    local outcome = runMenu(world, "ApplyMenu.lua")
    T.eq(outcome.collectionsError, nil, "reuse is fine")
    T.eq(outcome.plan.counts.already, 2, "second run: already applied")
    T.eq(#outcome.plan.actions, 0, "second run writes nothing")
    T.eq(#world:stepsNamed("Apply cull verdicts"), 1, "no new write step")
end)

T.test("apply command: cancel at the preview writes nothing; no report chosen does nothing", function()
    local world, report = standardWorld()
    world.answers.runOpenPanel = { { report } }
    world.answers.presentModalDialog = { "cancel" }
    T.eq(runMenu(world, "ApplyMenu.lua").status, "canceled", "canceled")
    T.eq(#world.steps, 0, "no write access taken")
    T.eq(runMenu(world, "ApplyMenu.lua").status, "noReport", "open panel cancelled")
end)

T.test("apply command: 0 matches -> clear message, remap set in the dialog, then applied and remembered", function()
    local world = sdk.new { pluginDir = T.pluginDir }
    world.catalog:addTestPhoto { path = "/Volumes/photos/2024/a.jpg" }
    world.catalog:addTestPhoto { path = "/Volumes/photos/2024/b.jpg" }
    local report = writeTemp(jsonRow("/mnt/nas/photos/2024/a.jpg", "reject") .. "\n"
        .. jsonRow("/mnt/nas/photos/2024/b.jpg", "uncertain") .. "\n")
    world.answers.runOpenPanel = { { report } }
    world.answers.presentModalDialog = {
        function(args)
            local props = sdk.dialogProps(args)
            props.remapFrom = "/mnt/nas/photos/"
            props.remapTo = "/Volumes/photos"
            return "ok" -- "Match again"
        end,
        "ok",
    }
    local outcome = runMenu(world, "ApplyMenu.lua")
    local first = world.dialogs[2]
    T.eq(first.args.actionVerb, "Match again", "no Apply button when nothing matched")
    local text = dialogText(first)
    T.contains(text, "None of the photos in this report is in this catalog", "headline")
    T.contains(text, "/mnt/nas/photos/2024/a.jpg", "shows a path it looked for")
    T.contains(dialogText(world.dialogs[3]), "2 matched", "second preview matches")
    T.eq(outcome.status, "applied", "applied")
    T.eq(world.catalog.byPath["/Volumes/photos/2024/a.jpg"].pick, -1, "remapped reject")
    T.eq(world.catalog.byPath["/Volumes/photos/2024/b.jpg"].label, "yellow", "remapped label")
    T.eq(world.prefs.remapFrom, "/mnt/nas/photos/", "remembered")
    -- next run starts with the remembered remap
    local again = sdk.new { pluginDir = T.pluginDir, prefs = world.prefs }
    again.catalog:addTestPhoto { path = "/Volumes/photos/2024/a.jpg" }
    again.answers.runOpenPanel = { { report } }
    again.answers.presentModalDialog = { "cancel" }
    runMenu(again, "ApplyMenu.lua")
    T.contains(dialogText(again.dialogs[2]), "1 matched", "prefs used")
end)

T.test("apply command: Windows report, Mac catalog: remap + ignore case (catalog index on a miss)", function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { remapFrom = "c:\\users\\ann\\pictures",
        remapTo = "/Volumes/Pictures", ignoreCase = true } }
    world.catalog:addTestPhoto { path = "/Volumes/Pictures/Trip/IMG_1.JPG" }
    world.catalog:addTestPhoto { path = "/Volumes/Pictures/trip/img_2.jpg" }
    local report = writeTemp("report_version,path,abs_path,verdict,score,kind,partner,partner_abs,size,mtime,error\r\n"
        .. "1,a,C:\\Users\\Ann\\Pictures\\Trip\\IMG_1.JPG,reject,0.01,motion,,,1,1,\r\n"
        .. "1,b,C:\\Users\\Ann\\Pictures\\Trip\\IMG_2.JPG,reject,0.01,motion,,,1,1,\r\n", ".csv")
    world.answers.runOpenPanel = { { report } }
    world.answers.presentModalDialog = { "ok" }
    runMenu(world, "ApplyMenu.lua")
    T.eq(world.catalog.photos[1].pick, -1, "exact after remap")
    T.eq(world.catalog.photos[2].pick, -1, "case-insensitive match")
end)

T.test("apply command: an unreadable report gives a message, no writes", function()
    local world = sdk.new { pluginDir = T.pluginDir }
    local report = writeTemp('{"report_version": 7, "abs_path": "/a.jpg", "verdict": "reject"}\n')
    world.answers.runOpenPanel = { { report } }
    local outcome = runMenu(world, "ApplyMenu.lua")
    T.eq(outcome.status, "badReport", "status")
    T.eq(world.messages[1].style, "critical", "critical message"); T.contains(world.messages[1].info, "version 7", "why")
    T.eq(#world.steps, 0, "nothing written")
end)

--- A world with n photos /p/IMG_0001.JPG... and the JSON Lines report giving each the verdict.
local function bigWorld(n, verdict)
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    local lines = {}
    for i = 1, n do
        local path = string.format("/p/IMG_%04d.JPG", i)
        world.catalog:addTestPhoto { path = path }
        lines[i] = jsonRow(path, verdict or "reject")
    end
    return world, table.concat(lines, "\n") .. "\n"
end

T.test("apply command: cancel in the progress scope mid-way (450 photos)", function()
    local world, text = bigWorld(450, "reject")
    world.answers.runOpenPanel = { { writeTemp(text) } }
    world.answers.presentModalDialog = { "ok" }
    world.cancelAtPortion = 400
    local outcome = runMenu(world, "ApplyMenu.lua")
    T.eq(#world:stepsNamed("Apply cull verdicts"), 2, "two steps before the cancel")
    T.eq(outcome.result.notReached, 50, "last 50 not reached")
    T.eq(world.catalog.photos[400].pick, -1, "400 written"); T.eq(world.catalog.photos[401].pick, 0, "401 not")
    T.ok(world.progressScopes[1].finished, "progress scope closed")
    T.contains(world.messages[#world.messages].info, "cancelled", "says it stopped")
end)

T.test("undo command: clears exactly what cull set, keeps what the user changed since", function()
    local world, report = standardWorld()
    world.answers.runOpenPanel = { { report } }
    world.answers.presentModalDialog = { "ok" }
    runMenu(world, "ApplyMenu.lua")
    local p = world.catalog.byPath
    -- the user overrides one verdict by hand after the apply
    p["/Volumes/nas/soft.jpg"].label = "green"
    world.answers.confirm = { "ok" }
    local outcome = runMenu(world, "UndoMenu.lua")
    T.eq(outcome.status, "undone", "status")
    T.contains(world.dialogs[#world.dialogs].args.message, "Undo", "asked first")
    T.eq(outcome.plan.counts.clearFlags, 1, "one flag"); T.eq(outcome.plan.counts.changedSince, 1, "one changed")
    T.eq(p["/Volumes/nas/blur.jpg"].pick, 0, "flag cleared")
    T.eq(p["/Volumes/nas/blur.jpg"].props.verdict, nil, "receipt cleared")
    T.eq(p["/Volumes/nas/soft.jpg"].label, "green", "user's label kept")
    T.eq(p["/Volumes/nas/soft.jpg"].props.setLabel, nil, "its receipt cleared")
    T.eq(p["/Volumes/nas/mine.jpg"].pick, 1, "hand pick never touched")
    T.eq(p["/Volumes/nas/red.jpg"].label, "red", "hand label never touched")
    T.eq(#world:stepsNamed("Undo cull verdicts"), 1, "one undo step")
    for _, w in ipairs(world.writes) do T.ok(w.key ~= "rating", "rating never written") end
    -- nothing left to undo
    T.eq(runMenu(world, "UndoMenu.lua").status, "nothing", "second undo")
end)

T.test("undo command: declining the confirmation changes nothing", function()
    local world, report = standardWorld()
    world.answers.runOpenPanel = { { report } }
    world.answers.presentModalDialog = { "ok" }
    runMenu(world, "ApplyMenu.lua")
    local before = #world.steps
    world.answers.confirm = { "cancel" }
    T.eq(runMenu(world, "UndoMenu.lua").status, "canceled", "declined")
    T.eq(#world.steps, before, "no write")
    T.eq(world.catalog.byPath["/Volumes/nas/blur.jpg"].pick, -1, "still rejected")
end)

T.test("apply command: errors surface through Lightroom's error dialog, not a dead task", function()
    local world, report = standardWorld()
    world.answers.runOpenPanel = { { report } }
    world.catalog.findPhotoByPath = function() error("catalog exploded") end
    loadfile(T.pluginDir .. "/ApplyMenu.lua")()
    T.eq(world:runTasks()[1], nil, "task ends")
    T.contains(world.errors[1], "catalog exploded", "shown to the user")
    T.ok(world.progressScopes[1].finished, "its progress scope ended with the task (functionContext)")
end)

T.test("apply command: non-UTF-8 and relative rows are listed as unmatchable in the preview, others applied", function()
    local world = sdk.new { pluginDir = T.pluginDir }
    world.catalog:addTestPhoto { path = "/p/ok.jpg" }
    local report = writeTemp(jsonRow("/p/ok.jpg", "reject") .. "\n"
        .. '{"report_version": 1, "path": "caf\\udce9.jpg", "abs_path": "/p/caf\\udce9.jpg", "verdict": "reject"}\n'
        .. '{"path": "rel/x.jpg", "verdict": "reject"}\n'
        .. "{not json\n")
    world.answers.runOpenPanel = { { report } }
    world.answers.presentModalDialog = { "ok" }
    local outcome = runMenu(world, "ApplyMenu.lua")
    local text = dialogText(world.dialogs[2])
    T.contains(text, "Cannot be matched (see below): 2", "count")
    T.contains(text, "not valid UTF-8", "reason shown")
    T.contains(text, "Report lines that could not be read: 1", "broken line counted")
    T.eq(outcome.status, "applied", "the rest applied")
    T.eq(world.catalog.byPath["/p/ok.jpg"].pick, -1, "good row applied")
end)

--- Run "Apply cull verdicts…" on report text with the preview answered by answers (default: Apply).
local function applyText(world, text, answers, suffix)
    world.answers.runOpenPanel = { { writeTemp(text, suffix) } }
    world.answers.presentModalDialog = answers or { "ok" }
    return runMenu(world, "ApplyMenu.lua")
end

local function protectedRow(absPath, why)
    return jsonRow(absPath, "reject"):gsub("}$", ', "protected": "' .. why .. '"}')
end

T.test("apply command: a protected reject on a photo cull labelled before loses the label, is never flagged",
    function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    local p = world.catalog:addTestPhoto { path = "/p/a.jpg" }
    applyText(world, jsonRow("/p/a.jpg", "uncertain") .. "\n")
    T.eq(p.label, "yellow", "first run: labelled")
    local outcome = applyText(world, protectedRow("/p/a.jpg", "user rated it 4 stars") .. "\n")
    local c = outcome.plan.counts
    T.eq(c.protected, 1, "counted protected"); T.eq(c.toReject, 0, "preview: none to flag"); T.eq(c.toClear, 1, "to clear")
    T.eq(p.pick, 0, "written: never flagged Rejected"); T.eq(p.label, "none", "cull's label cleared")
    T.eq(p.props.verdict, nil, "no receipt left"); T.eq(p.props.setPick, nil, "no flag receipt")
    T.eq(outcome.plan.actions[1].verdict, "keep", "the action carries the verdict decided on")
    T.eq(outcome.result.done, 1, "done"); T.eq(outcome.result.changed, 0, "nothing skipped")
end)

T.test("apply command: a protected reject cull flagged before: the flag comes off, as the preview says", function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    local p = world.catalog:addTestPhoto { path = "/p/a.jpg" }
    applyText(world, jsonRow("/p/a.jpg", "reject") .. "\n")
    T.eq(p.pick, -1, "first run: flagged")
    local outcome = applyText(world, protectedRow("/p/a.jpg", "user took back cull's reject (xmp:Rating)") .. "\n")
    T.contains(dialogText(world.dialogs[#world.dialogs]), "1 photo will lose what cull set", "preview")
    T.eq(p.pick, 0, "written: flag removed"); T.eq(p.props.verdict, nil, "receipt cleared")
    T.eq(outcome.result.done, 1, "done")
    local again = applyText(world, protectedRow("/p/a.jpg", "user rated it 2 stars") .. "\n")
    T.eq(#again.plan.actions, 0, "third run: nothing to do"); T.eq(p.pick, 0, "still not flagged")
end)

T.test("apply: the write re-checks with the plan's verdict and skips a photo whose decision changed", function()
    local world = sdk.new { pluginDir = T.pluginDir }
    local p = world.catalog:addTestPhoto { path = "/p/a.jpg", pick = -1,
        props = { verdict = "reject", setPick = "-1" } }
    local CullGlue = require "CullGlue"
    local plan = CullGlue.plan(world.catalog, { rows = { { absPath = "/p/a.jpg", verdict = "reject",
        protected = "user picked it (flagged)" } } }, {})
    T.eq(plan.actions[1].ops.clearPick, true, "planned: clear our flag")
    p.label = "yellow" -- meanwhile: the photo got a label the plan did not see
    p.props.setLabel = "yellow"
    local result
    world.modules.LrTasks.startAsyncTask(function()
        result = require("CullApply").run { catalog = world.catalog, actions = plan.actions, plugin = _PLUGIN,
            settings = {} }
    end)
    T.eq(world:runTasks()[1], nil, "task")
    T.eq(result.changed, 1, "not what was previewed: left alone"); T.eq(p.label, "yellow", "label kept")
    T.eq(p.pick, -1, "nothing written")
end)

T.test("apply command: re-applying leaves a reject the user unflagged and a label the user removed", function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    local a = world.catalog:addTestPhoto { path = "/p/a.jpg" }
    local b = world.catalog:addTestPhoto { path = "/p/b.jpg" }
    local report = jsonRow("/p/a.jpg", "reject") .. "\n" .. jsonRow("/p/b.jpg", "uncertain") .. "\n"
    applyText(world, report)
    T.eq(a.pick, -1, "flagged"); T.eq(b.label, "yellow", "labelled")
    a.pick = 0        -- the user: Unflag (U)
    b.label = "none"  -- the user: Label > None
    local steps = #world.steps
    local outcome = applyText(world, report)
    local text = dialogText(world.dialogs[#world.dialogs])
    T.contains(text, "Will flag 0 photos as Rejected", "preview: nothing to flag")
    T.contains(text, "Will give 0 photos the yellow label", "preview: nothing to label")
    T.contains(text, "never changed: 2", "both counted as the user's")
    T.eq(#outcome.plan.actions, 0, "no action"); T.eq(#world.steps, steps, "nothing written")
    T.eq(a.pick, 0, "still unflagged"); T.eq(b.label, "none", "still no label")
    -- a newer report that changed its mind leaves them alone too; undo tells they changed since
    applyText(world, jsonRow("/p/a.jpg", "uncertain") .. "\n" .. jsonRow("/p/b.jpg", "reject") .. "\n")
    T.eq(a.label, "none", "not labelled"); T.eq(b.pick, 0, "not flagged")
    world.answers.confirm = { "ok" }
    local undo = runMenu(world, "UndoMenu.lua")
    T.eq(undo.plan.counts.changedSince, 2, "undo: changed since"); T.eq(a.props.verdict, nil, "receipts cleared")
end)

T.test("apply command: a label of no colour of the active set is the user's: never replaced, never flagged", function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    local a = world.catalog:addTestPhoto { path = "/p/a.jpg", labelText = "Review" }   -- from another label set
    local b = world.catalog:addTestPhoto { path = "/p/b.jpg", labelText = "To Print" }
    local c = world.catalog:addTestPhoto { path = "/p/c.jpg" }
    local outcome = applyText(world, jsonRow("/p/a.jpg", "uncertain") .. "\n" .. jsonRow("/p/b.jpg", "reject") .. "\n"
        .. jsonRow("/p/c.jpg", "uncertain") .. "\n")
    T.eq(outcome.plan.counts.handSet, 2, "both hand-set")
    T.eq(a:getFormattedMetadata("label"), "Review", "label text kept"); T.eq(b.pick, 0, "not flagged")
    T.eq(c.label, "yellow", "a photo with no label is labelled")
    for _, w in ipairs(world.writes) do
        if w.key == "colorNameForLabel" then
            T.ok(({ red = 1, yellow = 1, green = 1, blue = 1, purple = 1, none = 1 })[w.value], "writes colour names only")
        end
    end
end)

T.test("apply command: ignore case never lands on a virtual copy; the master gets the verdict", function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { ignoreCase = true, makeCollections = false } }
    local master = world.catalog:addTestPhoto { path = "C:\\Photos\\IMG_1.JPG" }
    local copy = world.catalog:addTestVirtualCopy(master)
    local other = world.catalog:addTestPhoto { path = "C:\\Photos\\IMG_2.JPG" }
    local copy2 = world.catalog:addTestVirtualCopy(other) -- unmarked: a marked copy would keep its master as is
    local outcome = applyText(world, "path,abs_path,verdict,report_version\r\n"
        .. "a,c:\\photos\\img_1.jpg,reject,1\r\nb,C:\\Photos\\IMG_2.JPG,uncertain,1\r\n", nil, ".csv")
    T.eq(outcome.plan.counts.matched, 2, "matched")
    T.eq(master.pick, -1, "case-insensitive match: the master"); T.eq(copy.pick, 0, "its virtual copy left alone")
    T.eq(other.label, "yellow", "exact match: the master"); T.eq(copy2.label, "none", "copy untouched")
    T.eq(copy.props.verdict, nil, "no receipt on a copy"); T.eq(copy2.props.verdict, nil, "nor on the other")
end)

T.test("apply command: an exact look-up that finds a virtual copy uses its master", function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    local master = world.catalog:addTestPhoto { path = "/p/a.jpg" }
    local copy = world.catalog:addTestVirtualCopy(master)
    world.catalog.byPath["/p/a.jpg"] = copy -- the reference does not say which one findPhotoByPath returns
    applyText(world, jsonRow("/p/a.jpg", "reject") .. "\n")
    T.eq(master.pick, -1, "master flagged"); T.eq(copy.pick, 0, "copy left alone")
end)

T.test("apply command: a master whose virtual copy you rated is never flagged; cull's earlier flag comes off",
    function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    local c = world.catalog
    local kept = c:addTestPhoto { path = "/p/kept.jpg" }
    local keptCopy = c:addTestVirtualCopy(kept, { rating = 4 })
    local early = c:addTestPhoto { path = "/p/early.jpg" }
    local report = jsonRow("/p/kept.jpg", "reject") .. "\n" .. jsonRow("/p/early.jpg", "reject") .. "\n"
    local first = applyText(world, report)
    T.eq(first.plan.counts.handSet, 1, "counted hand-set"); T.eq(first.plan.counts.toReject, 1, "one to flag")
    T.contains(dialogText(world.dialogs[2]), "never changed: 1", "the preview counts it")
    T.contains(dialogText(world.dialogs[2]), "a virtual copy is flagged/rated/labelled by hand: 1", "and says why")
    T.eq(kept.pick, 0, "master not Rejected"); T.eq(kept.props.verdict, nil, "no receipt")
    T.eq(keptCopy.rating, 4, "copy keeps its stars")
    for _, w in ipairs(world.writes) do
        T.ok(w.photo ~= kept and w.photo ~= keptCopy, "nothing written to the master or its copy")
    end
    T.eq(early.pick, -1, "the other master is flagged")
    -- a copy made and starred after the apply: re-applying takes cull's flag (and receipt) off the master
    local earlyCopy = c:addTestVirtualCopy(early, { rating = 5, label = "red" })
    local before = #world.writes
    local again = applyText(world, report)
    T.eq(again.plan.counts.handSet, 1, "the kept master"); T.eq(again.plan.counts.clearedViaCopy, 1, "one flag off")
    T.eq(again.plan.counts.toClear, 0, "not a changed verdict")
    T.contains(dialogText(world.dialogs[#world.dialogs]), "Will take cull's earlier flag or label off 1 master photo",
        "the preview says so")
    T.eq(again.result.done, 1, "written")
    T.eq(early.pick, 0, "cull's flag cleared"); T.eq(early.props.verdict, nil, "receipt cleared")
    T.eq(early.props.setPick, nil, "no setPick left"); T.eq(early.props.score, nil, "no score left")
    T.eq(earlyCopy.rating, 5, "copy keeps its stars"); T.eq(earlyCopy.label, "red", "and its label")
    T.eq(earlyCopy.pick, 0, "and is not flagged"); T.eq(earlyCopy.props.verdict, nil, "no receipt on the copy")
    for i = before + 1, #world.writes do
        local w = world.writes[i]
        T.eq(w.photo, early, "written to that master only")
        T.ok(w.key ~= "rating" and w.key ~= "colorNameForLabel", "only its flag and receipt: " .. w.key)
    end
    -- re-applying changes nothing more; undo finds nothing of cull's left
    local after = #world.writes
    local third = applyText(world, report)
    T.eq(#third.plan.actions, 0, "nothing planned"); T.eq(#world.writes, after, "nothing written")
    T.eq(third.plan.counts.handSet, 2, "both masters hand-set now")
    T.ok(not dialogText(world.dialogs[#world.dialogs]):find("Will take cull's", 1, true), "no flag to take off")
    local undo = runMenu(world, "UndoMenu.lua")
    T.eq(undo.status, "nothing", "no receipt left to undo"); T.eq(#world.writes, after, "undo wrote nothing")
    T.eq(early.pick, 0, "master stays unflagged"); T.eq(earlyCopy.rating, 5, "copy untouched")
    T.eq(kept.pick, 0, "kept master untouched"); T.eq(keptCopy.rating, 4, "its copy untouched")
end)

T.test("apply command: a setting changed in the preview, then Apply: matched again and shown before writing",
    function()
    local world = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    local a = world.catalog:addTestPhoto { path = "/a/x.jpg" }
    local b = world.catalog:addTestPhoto { path = "/b/x.jpg" }
    local report = jsonRow("/a/x.jpg", "reject") .. "\n"
    local function editPrefix(args)
        local props = sdk.dialogProps(args)
        props.remapFrom, props.remapTo = "/a", "/b" -- a changed (or mistyped) prefix, then "Apply"
        return "ok"
    end
    local outcome = applyText(world, report, { editPrefix, "cancel" })
    T.eq(outcome.status, "canceled", "the second preview was declined")
    T.eq(#world.steps, 0, "nothing written"); T.eq(b.pick, 0, "/b untouched"); T.eq(a.pick, 0, "/a untouched")
    local second = dialogText(world.dialogs[3])
    T.contains(second, "The settings changed", "says why it shows again")
    T.eq(world.dialogs[3].args.actionVerb, "Apply", "Apply again to write")
    -- Apply on the second preview writes what it showed
    local world2 = sdk.new { pluginDir = T.pluginDir, prefs = { makeCollections = false } }
    world2.catalog:addTestPhoto { path = "/a/x.jpg" }
    local b2 = world2.catalog:addTestPhoto { path = "/b/x.jpg" }
    local applied = applyText(world2, report, { editPrefix, "ok" })
    T.eq(applied.status, "applied", "applied"); T.eq(b2.pick, -1, "what the second preview showed")
    T.eq(world2.catalog.byPath["/a/x.jpg"].pick, 0, "not what the first one showed")
    T.eq(#applied.plan.actions, 1, "the previewed plan")
    -- the smart-collections box changes no count: Apply writes at once
    local world3 = sdk.new { pluginDir = T.pluginDir }
    local a3 = world3.catalog:addTestPhoto { path = "/a/x.jpg" }
    applyText(world3, report, { function(args)
        sdk.dialogProps(args).makeCollections = false
        return "ok"
    end })
    T.eq(a3.pick, -1, "applied after one preview"); T.eq(world3.catalog.smartCollections["cull: Rejects"], nil, "no collections")
end)

T.test("apply command: a long report is read and matched in steps that let Lightroom run (LrTasks.yield)",
    function()
    local world, text = bigWorld(1500, "keep")
    local outcome = applyText(world, text)
    T.eq(outcome.plan.counts.matched, 1500, "matched")
    T.ok(world.taskYields >= 6, "yielded while reading and matching: " .. world.taskYields)
end)

--- The scope's fractions stay within 0..1 and never go down; returns how many are up to split and above it.
local function risingFractions(scope, split)
    local last, below, above = 0, 0, 0
    for i, f in ipairs(scope.fractions) do
        T.ok(f >= last and f <= 1, string.format("fraction %d is %s after %s", i, tostring(f), tostring(last)))
        if f <= split then below = below + 1 else above = above + 1 end
        last = f
    end
    return below, above
end

--- Nothing in the catalog changed and nothing was said: what a cancel before the preview leaves.
local function untouched(world)
    T.eq(#world.steps, 0, "no write access taken"); T.eq(#world.writes, 0, "nothing written")
    T.eq(#world.messages, 0, "no message"); T.eq(world.errors[1], nil, "no error dialog")
    for _, d in ipairs(world.dialogs) do T.ok(d.kind ~= "presentModalDialog", "no preview") end
    for _, photo in ipairs(world.catalog.photos) do T.eq(photo.pick, 0, "not flagged") end
end

T.test("apply command: reading and matching a long report show a progress bar the user can cancel", function()
    local CullGlue = require "CullGlue"
    for _, suffix in ipairs({ ".jsonl", ".csv" }) do
        local world, text = bigWorld(1500)
        if suffix == ".csv" then
            local lines = { "report_version,path,abs_path,verdict" }
            for i = 1, 1500 do lines[#lines + 1] = string.format("1,x,/p/IMG_%04d.JPG,reject", i) end
            text = table.concat(lines, "\n") .. "\n"
        end
        local doneAtPreview
        local outcome = applyText(world, text, { function(_, w)
            doneAtPreview = w.progressScopes[1].finished
            return "ok"
        end }, suffix)
        T.eq(outcome.status, "applied", suffix .. ": applied as before"); T.eq(outcome.result.done, 1500, "all written")
        local scope = world.progressScopes[1]
        T.eq(scope.title, CullGlue.PREPARE_TITLE, "title"); T.ok(scope.cancelable, "the user can cancel it")
        T.eq(scope.captions[1], "Reading the cull report", "first caption")
        T.eq(scope.captions[2], "Matching 1500 photos", "then"); T.eq(#scope.captions, 2, "two captions")
        local reading, matching = risingFractions(scope, CullGlue.READ_SHARE)
        T.ok(reading >= 3 and matching >= 3, suffix .. ": moves while reading and while matching: "
            .. reading .. ", " .. matching)
        T.eq(scope:fraction(), 1, "ends at 1"); T.ok(doneAtPreview, "done before the preview shows")
        T.eq(scope.touchedAfterDone, 0, "left alone after done()")
        local writing = world.progressScopes[2]
        T.eq(writing.title, "Applying cull verdicts", "the write's own scope"); T.ok(writing.cancelable, "cancelable")
        T.eq(#world.progressScopes, 2, "no other scope")
    end
end)

T.test("apply command: cancelling while the report is read changes nothing and says nothing", function()
    local CullGlue = require "CullGlue"
    local world, text = bigWorld(1500)
    world.cancelWhen = function(scope)
        return scope.caption == CullGlue.READ_CAPTION and scope:fraction() > 0
    end
    local outcome = applyText(world, text)
    T.eq(outcome.status, "canceled", "canceled"); T.eq(outcome.during, "read", "while reading")
    local scope = world.progressScopes[1]
    T.ok(scope.canceledByUser, "the user cancelled"); T.ok(scope.finished, "the bar is gone")
    T.ok(scope:fraction() < CullGlue.READ_SHARE, "stopped in the read")
    for _, e in ipairs(world.events) do T.ok(e[1] ~= "find", "no photo looked up") end
    untouched(world)
end)

T.test("apply command: cancelling while matching (first match or Match again) changes nothing", function()
    local CullGlue = require "CullGlue"
    local world, text = bigWorld(1500)
    world.cancelWhen = function(scope)
        return scope.caption == CullGlue.matchCaption(1500) and scope:fraction() > CullGlue.READ_SHARE
    end
    local outcome = applyText(world, text)
    T.eq(outcome.status, "canceled", "canceled"); T.eq(outcome.during, "match", "while matching")
    local finds = 0
    for _, e in ipairs(world.events) do if e[1] == "find" then finds = finds + 1 end end
    T.ok(finds > 0 and finds < 1500, "stopped part way: " .. finds .. " look-ups")
    T.ok(world.progressScopes[1].finished, "the bar is gone"); T.eq(#world.progressScopes, 1, "no write scope")
    untouched(world)
    -- "Match again" from the preview gets its own scope, from 0, and can be cancelled the same way
    local again, againText = bigWorld(1500)
    again.cancelWhen = function(scope, w)
        return scope ~= w.progressScopes[1] and scope:fraction() > 0.5
    end
    local second = applyText(again, againText, { function(args)
        sdk.dialogProps(args).ignoreCase = true
        return "other" -- "Match again"
    end })
    T.eq(second.status, "canceled", "canceled"); T.eq(second.during, "match", "in the second match")
    local rematch = again.progressScopes[2]
    T.eq(rematch.title, CullGlue.PREPARE_TITLE, "title"); T.eq(rematch.captions[1], "Matching 1500 photos", "caption")
    T.ok(rematch.fractions[1] < 0.5 and rematch.canceledByUser and rematch.finished, "from 0, cancelled, gone")
    T.eq(#again.steps, 0, "nothing written"); T.eq(#again.writes, 0, "no write")
    T.eq(#again.messages, 0, "no message"); T.eq(#again.dialogs, 2, "the chooser and the first preview only")
end)

T.test("CullGlue.plan and the report read take a progress ticker outside a task too (no yield)", function()
    local CullGlue = require "CullGlue"
    local CullReport = require "CullReport"
    local world, text = bigWorld(1200)
    local report = assert(CullReport.parse(text, "r.jsonl", CullGlue.ticker(nil, 0, 1)))
    local scope = world.modules.LrProgressScope { title = "t" }
    local plan = CullGlue.plan(world.catalog, report, {}, nil, CullGlue.ticker(scope, 0.5, 1))
    T.eq(plan.counts.matched, 1200, "matched"); T.eq(world.yields, 0, "never yielded")
    T.eq(#scope.fractions, 2, "two ticks"); T.ok(scope.fractions[1] > 0.5, "within its range")
    scope:cancel()
    T.eq(CullGlue.plan(world.catalog, report, {}, nil, CullGlue.ticker(scope, 0, 1)), nil, "a cancelled scope stops it")
end)
