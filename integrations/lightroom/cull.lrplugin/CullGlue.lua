--[[ CullGlue: the Lightroom Classic side of the two menu commands (dialogs, tasks, progress).

The logic lives in CullReport (read), CullPlan (decide) and CullApply (write); this file only
asks, looks up, shows and reports. Order of work (what the SDK requires):
  async task -> choose the report -> read it and find every photo with catalog:findPhotoByPath (no
  write access yet) under a cancellable progress scope -> preview dialog with counts and the path
  settings -> chunks of withWriteAccessDo under a cancellable progress scope -> optional smart
  collections -> summary. A cancel before the preview ends the command quietly, as the preview's
  Cancel does: nothing was written, so there is nothing to report.
Yielding calls (dialogs, withWriteAccessDo) run only in the task, never inside write access,
and are protected with LrTasks.pcall, not pcall. cull itself is never run from here.
]]

local LrApplication = import "LrApplication"
local LrBinding = import "LrBinding"
local LrDialogs = import "LrDialogs"
local LrFunctionContext = import "LrFunctionContext"
local LrPrefs = import "LrPrefs"
local LrProgressScope = import "LrProgressScope"
local LrTasks = import "LrTasks"
local LrView = import "LrView"

local CullApply = require "CullApply"
local CullPaths = require "CullPaths"
local CullPlan = require "CullPlan"
local CullReport = require "CullReport"

local CullGlue = {}

CullGlue.APPLY_STEP = "Apply cull verdicts"
CullGlue.UNDO_STEP = "Undo cull verdicts"
CullGlue.COLLECTIONS_STEP = "Create cull smart collections"
CullGlue.REJECTS_COLLECTION = "cull: Rejects"
CullGlue.UNCERTAIN_COLLECTION = "cull: Uncertain"
CullGlue.PREPARE_TITLE = "Preparing cull verdicts"
CullGlue.READ_CAPTION = "Reading the cull report"
-- The read's share of the first progress bar; the rest is the match: one catalog look-up per row
-- costs more than parsing the row.
CullGlue.READ_SHARE = 0.25

local SETTING_KEYS = { "remapFrom", "remapTo", "ignoreCase", "uncertainLabel", "makeCollections" }
local DEFAULTS = { remapFrom = "", remapTo = "", ignoreCase = false, uncertainLabel = "yellow", makeCollections = true }

--- The settings as a plain table (from prefs or a property table), defaults filled in.
function CullGlue.settingsFrom(source)
    local settings = {}
    for _, key in ipairs(SETTING_KEYS) do
        local value = source and source[key]
        if value == nil then
            value = DEFAULTS[key]
        end
        settings[key] = value
    end
    return settings
end

--- The case-folded path -> photo index of the catalog's photos, virtual copies left out (a virtual
-- copy has its master's path; the verdict belongs to the master, and copies are left alone).
function CullGlue.caseFoldedIndex(catalog)
    local index = {}
    local photos = catalog:getAllPhotos()
    local meta = catalog:batchGetRawMetadata(photos, { "path", "isVirtualCopy" })
    for _, p in ipairs(photos) do
        local known = meta[p] and meta[p].path
        if known and not meta[p].isVirtualCopy then
            index[CullPaths.key(known, true)] = p
        end
    end
    return index
end

--- A lookup function path -> photo. Exact first (findPhotoByPath); with ignoreCase, a case-folded
-- index of the catalog's paths is built on the first miss, once per cache (a table the caller keeps
-- for one run, so "Match again" does not scan the whole catalog again). Never a virtual copy.
function CullGlue.makeLookup(catalog, settings, cache)
    cache = cache or {}
    return function(path)
        if path == nil then
            return nil
        end
        local photo = catalog:findPhotoByPath(path)
        if photo and photo:getRawMetadata("isVirtualCopy") then
            photo = photo:getRawMetadata("masterPhoto") -- the SDK does not say which one a path finds
        end
        if photo or not settings.ignoreCase then
            return photo
        end
        if cache.index == nil then
            cache.index = CullGlue.caseFoldedIndex(catalog)
        end
        return cache.index[CullPaths.key(path, true)]
    end
end

local function readState(photo)
    return CullApply.readState(photo, _PLUGIN)
end

--- Let Lightroom's other tasks and its user interface run during a long read or match (a no-op
-- where the caller cannot yield: outside a task, as in the plain-Lua tests).
local function breathe()
    if LrTasks.canYield() then
        LrTasks.yield()
    end
end

--- A progress scope the user can cancel, ended with context at the latest (an error included).
function CullGlue.progressScope(context, title)
    local scope = LrProgressScope { title = title, functionContext = context }
    scope:setCancelable(true) -- the reference does not say what a new scope allows: ask for it
    return scope
end

--- The tick CullReport.parse and CullPlan.build call as they go (count, fraction 0..1): moves the
-- bar of progress (a scope, or nil) to from + (to - from) * fraction, lets Lightroom run (a click on
-- the scope's cancel button lands only then) and returns true, which stops them, once cancelled.
function CullGlue.ticker(progress, from, to)
    return function(_, fraction)
        if progress then
            progress:setPortionComplete(from + (to - from) * fraction, 1)
        end
        breathe()
        return progress ~= nil and progress:isCanceled()
    end
end

--- The caption while the report's rows are looked up.
function CullGlue.matchCaption(rows)
    return string.format("Matching %d photo%s", rows, rows == 1 and "" or "s")
end

--- Look every row up and decide (no write access is taken here). cache: see makeLookup. tick: see
-- CullGlue.ticker (nil: only lets Lightroom run). Returns nil when tick stopped it.
function CullGlue.plan(catalog, report, settings, cache, tick)
    local lookup = CullGlue.makeLookup(catalog, settings, cache)
    return CullPlan.build(report, settings, lookup, readState, tick or CullGlue.ticker(nil, 0, 1))
end

--- Read the report under progress, its bar from 0 to READ_SHARE. Returns the report, or nil and
-- why it cannot be used, or nil and CullReport.CANCELED.
local function readWithProgress(progress, reportPath)
    progress:setCaption(CullGlue.READ_CAPTION)
    local report, err = CullReport.readFile(reportPath, CullGlue.ticker(progress, 0, CullGlue.READ_SHARE))
    if progress:isCanceled() then -- also a click after the last tick: nothing is shown after a cancel
        return nil, CullReport.CANCELED
    end
    return report, err
end

--- Match the report under progress (made here when nil), its bar from `from` to 1; the scope is
-- done before this returns, so no bar stays behind the preview. Returns the plan, nil if cancelled.
local function matchWithProgress(context, progress, from, catalog, report, settings, cache)
    progress = progress or CullGlue.progressScope(context, CullGlue.PREPARE_TITLE)
    progress:setCaption(CullGlue.matchCaption(#report.rows))
    local plan = CullGlue.plan(catalog, report, settings, cache, CullGlue.ticker(progress, from, 1))
    if plan and not progress:isCanceled() then
        progress:setPortionComplete(1, 1)
    else
        plan = nil
    end
    progress:done()
    return plan
end

--- The settings that change what the preview shows (the smart-collections box changes no count).
CullGlue.PLAN_KEYS = { "remapFrom", "remapTo", "ignoreCase", "uncertainLabel" }

--- True when settings b would give another plan than settings a.
function CullGlue.planSettingsDiffer(a, b)
    for _, key in ipairs(CullGlue.PLAN_KEYS) do
        if a[key] ~= b[key] then
            return true
        end
    end
    return false
end

local function chooseReport(prefs)
    local chosen = LrDialogs.runOpenPanel {
        title = "Choose the report cull scan --report wrote (.jsonl or .csv)",
        canChooseFiles = true,
        canChooseDirectories = false,
        allowsMultipleSelection = false,
        fileTypes = { "jsonl", "csv" },
        initialDirectory = prefs.lastReportFolder,
    }
    if chosen and chosen[1] then
        return chosen[1]
    end
    return nil
end

local LABEL_ITEMS = {
    { title = "Yellow", value = "yellow" }, { title = "Red", value = "red" },
    { title = "Green", value = "green" }, { title = "Blue", value = "blue" },
    { title = "Purple", value = "purple" }, { title = "No label", value = "none" },
}

CullGlue.SETTINGS_CHANGED = "The settings changed, so the report was matched again: check these counts, "
    .. "then Apply."

local function previewDialog(props, plan, reportPath, note)
    local f = LrView.osFactory()
    local bind = LrView.bind
    local matched = plan.counts.matched > 0
    local text = matched and table.concat(CullPlan.summary(plan, CullGlue.settingsFrom(props)), "\n")
        or CullPlan.zeroMatchHelp(plan, CullGlue.settingsFrom(props))
    if note then
        text = note .. "\n\n" .. text
    end
    local contents = f:column {
        bind_to_object = props,
        spacing = f:control_spacing(),
        f:static_text { title = "Report: " .. reportPath, width_in_chars = 70 },
        f:static_text { title = text, width_in_chars = 70, height_in_lines = 12 },
        f:separator { fill_horizontal = 1 },
        f:row {
            f:static_text { title = "Report path prefix:", width_in_chars = 18 },
            f:edit_field { value = bind "remapFrom", width_in_chars = 45 },
        },
        f:row {
            f:static_text { title = "Lightroom path prefix:", width_in_chars = 18 },
            f:edit_field { value = bind "remapTo", width_in_chars = 45 },
        },
        f:checkbox { title = "Ignore case in paths (Windows)", value = bind "ignoreCase" },
        f:row {
            f:static_text { title = "Label for uncertain:", width_in_chars = 18 },
            f:popup_menu { value = bind "uncertainLabel", items = LABEL_ITEMS },
        },
        f:checkbox {
            title = "Create smart collections \"" .. CullGlue.REJECTS_COLLECTION .. "\" and \""
                .. CullGlue.UNCERTAIN_COLLECTION .. "\"",
            value = bind "makeCollections",
        },
    }
    return LrDialogs.presentModalDialog {
        title = matched and "Apply cull verdicts" or "cull: no photo of the report is in this catalog",
        contents = contents,
        actionVerb = matched and "Apply" or "Match again",
        otherVerb = matched and "Match again" or nil,
    }
end

--- Create (or reuse) the two smart collections. Yields: call in the task, never in write access.
function CullGlue.ensureCollections(catalog)
    local field = "sdktext:" .. _PLUGIN.id .. ".verdict"
    return catalog:withWriteAccessDo(CullGlue.COLLECTIONS_STEP, function()
        catalog:createSmartCollection(CullGlue.REJECTS_COLLECTION, {
            combine = "intersect",
            { criteria = field, operation = "==", value = "reject" },
            { criteria = "pick", operation = "==", value = -1 },
        }, nil, true)
        catalog:createSmartCollection(CullGlue.UNCERTAIN_COLLECTION, {
            combine = "intersect",
            { criteria = field, operation = "==", value = "uncertain" },
        }, nil, true)
    end, { timeout = CullApply.WRITE_TIMEOUT })
end

--- The closing message for an apply or undo run.
function CullGlue.describeResult(result, verb)
    local lines = { string.format("%s %d photo(s) in %d step(s).", verb, result.done, result.chunks) }
    if result.stoppedBecause == "canceled" then
        lines[#lines + 1] = string.format("Stopped when you cancelled: %d photo(s) not reached.", result.notReached)
    elseif result.stoppedBecause == "busy" then
        lines[#lines + 1] = string.format("Lightroom's catalog stayed busy: %d photo(s) not reached. Run it again.",
            result.notReached)
    end
    if result.changed > 0 then
        lines[#lines + 1] = string.format("Changed by hand meanwhile, left alone: %d.", result.changed)
    end
    if result.failed > 0 then
        lines[#lines + 1] = string.format("Failed: %d (first: %s).", result.failed, result.failures[1] or "?")
    end
    lines[#lines + 1] = "Edit > Undo reverts the last step (up to " .. CullApply.CHUNK_SIZE
        .. " photos); Library > Plug-in Extras > Undo cull verdicts… reverts them all."
    return table.concat(lines, "\n")
end

--- Apply command body (runs inside an async task). reportPath skips the file chooser.
function CullGlue.runApply(context, reportPath)
    local catalog = LrApplication.activeCatalog()
    local prefs = LrPrefs.prefsForPlugin()
    reportPath = reportPath or chooseReport(prefs)
    if not reportPath then
        return { status = "noReport" }
    end
    prefs.lastReportFolder = reportPath:match("^(.*)[\\/][^\\/]*$")
    local progress = CullGlue.progressScope(context, CullGlue.PREPARE_TITLE)
    local report, err = readWithProgress(progress, reportPath)
    if not report then
        progress:done()
    end
    if err == CullReport.CANCELED then
        return { status = "canceled", during = "read" }
    elseif not report then
        LrDialogs.message("cull: cannot use this report", err, "critical")
        return { status = "badReport", message = err }
    end
    local props = LrBinding.makePropertyTable(context)
    local saved = CullGlue.settingsFrom(prefs)
    for _, key in ipairs(SETTING_KEYS) do
        props[key] = saved[key]
    end
    -- What is written is the plan the user last saw: Apply after a setting was changed in the dialog
    -- matches again and shows the new preview instead of writing counts nobody saw.
    local plan, settings, note
    local cache = {}
    local from = CullGlue.READ_SHARE -- the first match goes on in the read's scope; "Match again" gets its own
    while true do
        local planned = CullGlue.settingsFrom(props)
        plan = matchWithProgress(context, progress, from, catalog, report, planned, cache)
        progress, from = nil, 0
        if not plan then
            return { status = "canceled", during = "match" }
        end
        local choice = previewDialog(props, plan, reportPath, note)
        if choice == "cancel" then
            return { status = "canceled", plan = plan }
        end
        settings = CullGlue.settingsFrom(props)
        for _, key in ipairs(SETTING_KEYS) do
            prefs[key] = settings[key]
        end
        local changed = CullGlue.planSettingsDiffer(planned, settings)
        if choice == "ok" and plan.counts.matched > 0 and not changed then
            break
        end
        note = (choice == "ok" and changed and plan.counts.matched > 0) and CullGlue.SETTINGS_CHANGED or nil
    end
    local result = { done = 0, changed = 0, failed = 0, notReached = 0, chunks = 0, failures = {} }
    if #plan.actions > 0 then
        progress = CullGlue.progressScope(context, "Applying cull verdicts")
        result = CullApply.run {
            catalog = catalog, actions = plan.actions, plugin = _PLUGIN, settings = settings,
            progress = progress, actionName = CullGlue.APPLY_STEP,
        }
        progress:done()
    end
    local collectionsError
    if settings.makeCollections and result.done > 0 then
        local ok, status = LrTasks.pcall(CullGlue.ensureCollections, catalog)
        if not ok or status == "aborted" then
            collectionsError = ok and "the catalog was busy" or tostring(status)
        end
    end
    local text = CullGlue.describeResult(result, "Changed")
    if collectionsError then
        text = text .. "\nThe smart collections could not be created: " .. collectionsError
    end
    text = text .. "\nTo see the rejects: Library > Filter bar > Attribute > Flag: Rejected."
    LrDialogs.message("cull: verdicts applied", text, "info")
    return { status = "applied", plan = plan, result = result, collectionsError = collectionsError }
end

--- Undo command body (runs inside an async task).
function CullGlue.runUndo(context)
    local catalog = LrApplication.activeCatalog()
    local photos = catalog:findPhotosWithProperty(_PLUGIN.id, "verdict") or {}
    if #photos == 0 then
        LrDialogs.message("cull: nothing to undo", "No photo in this catalog carries a flag or label this plug-in set.",
            "info")
        return { status = "nothing" }
    end
    local plan = CullPlan.buildUndo(photos, readState)
    local c = plan.counts
    local question = string.format(
        "%d photo(s) carry cull verdicts: %d Rejected flag(s) and %d label(s) will be cleared. "
            .. "%d photo(s) were changed by hand since; what you set stays.",
        c.photos, c.clearFlags, c.clearLabels, c.changedSince)
    if LrDialogs.confirm("Undo cull verdicts?", question, "Undo", "Cancel") ~= "ok" then
        return { status = "canceled", plan = plan }
    end
    local progress = CullGlue.progressScope(context, "Undoing cull verdicts")
    local result = CullApply.run {
        catalog = catalog, actions = plan.actions, plugin = _PLUGIN, progress = progress,
        actionName = CullGlue.UNDO_STEP,
    }
    progress:done()
    LrDialogs.message("cull: verdicts undone", CullGlue.describeResult(result, "Cleared"), "info")
    return { status = "undone", plan = plan, result = result }
end

local function command(name, body)
    LrFunctionContext.postAsyncTaskWithContext(name, function(context)
        LrDialogs.attachErrorDialogToFunctionContext(context)
        CullGlue.lastOutcome = body(context)
    end)
end

function CullGlue.applyCommand()
    command("cull: apply verdicts", CullGlue.runApply)
end

function CullGlue.undoCommand()
    command("cull: undo verdicts", CullGlue.runUndo)
end

return CullGlue
