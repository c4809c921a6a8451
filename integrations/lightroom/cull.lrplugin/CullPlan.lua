--[[ CullPlan: decide, photo by photo, what "apply" and "undo" would change. Touches nothing.

A photo's state: { pick = -1|0|1, rating = nil|1..5, label = colour name or "none",
                   labelText = the label's name as the Metadata panel shows it (nil or "" when none),
                   receipt = { verdict, setPick, setLabel },  -- what this plug-in set earlier
                   copies = nil or { state of each virtual copy (no copies of its own) } }
The rules (in-focus priority: a hand-made choice always wins):
- reject    -> flag Rejected (pickStatus -1); uncertain -> colour label (default yellow); keep -> nothing.
- A photo flagged (picked or rejected), rated >= 1 star, or labelled by hand is never changed.
  "By hand" means: not the value this plug-in recorded that it set. A label whose text matches no
  colour of the active label set (Lightroom reads its colour as "none") is a label too.
- A master photo one of whose virtual copies is flagged, rated or labelled by hand (the same rules)
  is the user's as well, and never flagged or labelled: Lightroom deletes (or removes) a master
  together with its virtual copies, so a Rejected master would take the user's copy with it. A flag
  or label this plug-in set on it earlier (before the copy was marked) comes off, with the receipt,
  as for a protected reject; what the user set on the master stays. A report row never names a
  virtual copy (the look-up gives the master), so copies are never changed either.
- A flag or label this plug-in set that is now cleared was taken back by the user (Edit > Undo
  reverts the receipt with it): that is a hand-made choice as well, and re-applying never sets it again.
- A value this plug-in set that the new report no longer asks for (the verdict changed) is cleared.
- Undo clears exactly the values the plug-in set, and only where they are still what it set.
- A reject the report marks `protected` (the user rated, picked or accepted it outside Lightroom:
  darktable's sidecar, digiKam, cull review) is treated as keep: never flagged Rejected here either.
No SDK use: photos are looked up and read through functions the caller passes in.
]]

local CullPaths = require "CullPaths"

local CullPlan = {}

CullPlan.LABELS = { red = true, yellow = true, green = true, blue = true, purple = true }
CullPlan.TICK_ROWS = 500 -- build calls tick(rowsDone, fraction) this often

--- True when a colour label is present (Lightroom reports no label as "none", "grey" or nil).
function CullPlan.hasLabel(label)
    return label ~= nil and label ~= "" and label ~= "none" and label ~= "grey"
end

--- The label uncertain photos get, from settings.uncertainLabel (nil when labelling is off).
function CullPlan.uncertainLabel(settings)
    local label = settings and settings.uncertainLabel
    if label == nil then
        return "yellow"
    end
    label = tostring(label):lower()
    if CullPlan.LABELS[label] then
        return label
    end
    return nil
end

--- What a verdict asks for: { pick = -1 or nil, label = colour or nil }.
function CullPlan.desired(verdict, settings)
    if verdict == "reject" then
        return { pick = -1 }
    elseif verdict == "uncertain" then
        return { label = CullPlan.uncertainLabel(settings) }
    end
    return {}
end

--- True when the photo carries a label the user can see: a colour, or a label whose text matches no
-- colour of the active label set (its colour reads "none", its text is still there).
function CullPlan.labelled(state)
    if CullPlan.hasLabel(state.label) then
        return true
    end
    return type(state.labelText) == "string" and state.labelText:match("%S") ~= nil
end

--- True when the photo's Rejected flag is the one this plug-in recorded that it set.
local function ourPick(state)
    local receipt = state.receipt or {}
    return receipt.setPick == "-1" and (state.pick or 0) == -1
end

--- True when the photo's label is the one this plug-in recorded that it set.
local function ourLabel(state)
    local receipt = state.receipt or {}
    return receipt.setLabel ~= nil and state.label == receipt.setLabel
end

--- Why a master photo is the user's through its virtual copies (state.copies): each kind of hand-made
-- value found on a copy, once: "a virtual copy is picked" / "rejected" / "rated" / "labelled".
-- The same rules as for a photo itself; a value this plug-in recorded that it set does not count.
function CullPlan.copyReasons(copies)
    local reasons, found = {}, {}
    local function add(what)
        if not found[what] then
            found[what] = true
            reasons[#reasons + 1] = "a virtual copy is " .. what
        end
    end
    for _, copy in ipairs(copies or {}) do
        local pick = copy.pick or 0
        if pick ~= 0 and not ourPick(copy) then
            add(pick == 1 and "picked" or "rejected")
        end
        if copy.rating ~= nil and copy.rating >= 1 then
            add("rated")
        end
        if CullPlan.labelled(copy) and not ourLabel(copy) then
            add("labelled")
        end
    end
    return reasons
end

--- Decide for one photo. Returns { status, ops, receipt, reasons, viaCopy }.
-- status: "apply" (ops to write; viaCopy: only cull's own flag/label come off a master kept for a copy),
-- "already" (nothing to do, applied before), "handSet" (left alone; reasons says why, viaCopy when a
-- virtual copy is among them), "keep" (nothing asked, nothing to clear).
function CullPlan.evaluate(verdict, state, settings)
    local receipt = state.receipt or {}
    local pick = state.pick or 0
    local oursPick = ourPick(state)
    local oursLabel = ourLabel(state)
    local want = CullPlan.desired(verdict, settings)
    local labelled = CullPlan.labelled(state)
    local reasons = {}
    if pick ~= 0 and not oursPick then
        reasons[#reasons + 1] = pick == 1 and "picked" or "rejected"
    elseif receipt.setPick == "-1" and pick == 0 then
        reasons[#reasons + 1] = "unflagged" -- the user took cull's Rejected flag back
    end
    if state.rating ~= nil and state.rating >= 1 then
        reasons[#reasons + 1] = "rated"
    end
    if labelled and not oursLabel then
        reasons[#reasons + 1] = "labelled"
    elseif receipt.setLabel ~= nil and not labelled then
        reasons[#reasons + 1] = "label removed" -- the user took cull's label off
    end
    local copyReasons = CullPlan.copyReasons(state.copies)
    for _, reason in ipairs(copyReasons) do
        reasons[#reasons + 1] = reason
    end
    local hadReceipt = receipt.setPick ~= nil or receipt.setLabel ~= nil
    if #copyReasons > 0 and (oursPick or oursLabel) then
        -- set before the copy was marked: only cull's own values come off, and with them the receipt
        -- (nothing left for undo); what the user set on the master stays, as for a protected reject
        return { status = "apply", ops = { clearPick = oursPick or nil, clearLabel = oursLabel or nil },
            receipt = {}, reasons = reasons, viaCopy = true }
    end
    if #reasons > 0 then
        if want.pick or want.label or hadReceipt then
            return { status = "handSet", reasons = reasons, ops = {}, viaCopy = #copyReasons > 0 }
        end
        return { status = "keep", ops = {} }
    end
    local ops = {}
    if want.pick == -1 and pick == 0 then
        ops.setPick = -1
    elseif want.pick == nil and oursPick then
        ops.clearPick = true
    end
    if want.label ~= nil and (not labelled or (oursLabel and state.label ~= want.label)) then
        ops.setLabel = want.label
    elseif want.label == nil and oursLabel then
        ops.clearLabel = true
    end
    local newReceipt = {
        verdict = (want.pick or want.label) and verdict or nil,
        setPick = want.pick and "-1" or nil,
        setLabel = want.label,
    }
    local receiptChanges = newReceipt.verdict ~= receipt.verdict or newReceipt.setPick ~= receipt.setPick
        or newReceipt.setLabel ~= receipt.setLabel
    if next(ops) == nil and not receiptChanges then
        return { status = (want.pick or want.label) and "already" or "keep", ops = ops }
    end
    return { status = "apply", ops = ops, receipt = newReceipt }
end

--- Photo identity for de-duplication (an SDK photo object may differ between look-ups).
function CullPlan.photoKey(photo)
    if type(photo) == "table" and photo.localIdentifier ~= nil then
        return photo.localIdentifier
    end
    return photo
end

local function newCounts()
    return {
        rows = 0, matched = 0, viaPartner = 0, notFound = 0, unmatchable = 0, noVerdict = 0,
        toReject = 0, toLabel = 0, toClear = 0, already = 0, handSet = 0, keep = 0, duplicates = 0,
        unreadable = 0, protected = 0, handSetViaCopy = 0, clearedViaCopy = 0,
    }
end

--- Build the apply plan.
-- report: from CullReport.parse; settings: { remapFrom, remapTo, ignoreCase, uncertainLabel };
-- lookup(path) -> photo or nil; readState(photo) -> state.
-- tick (optional) is called every TICK_ROWS rows with (rows done, fraction done); when it returns
-- true (the user cancelled), the build stops and returns nil: no plan, so nothing can be written.
function CullPlan.build(report, settings, lookup, readState, tick)
    local rule = CullPaths.rule(settings)
    local plan = {
        counts = newCounts(), actions = {}, handSet = {}, notFoundExamples = {}, unmatchableExamples = {},
        remapped = 0, rule = rule,
    }
    local counts = plan.counts
    counts.unreadable = #(report.problems or {})
    local seen = {}
    local total = #report.rows
    for rowNo, row in ipairs(report.rows) do
        counts.rows = counts.rows + 1
        if row.unmatchable then
            counts.unmatchable = counts.unmatchable + 1
            if #plan.unmatchableExamples < 5 then
                plan.unmatchableExamples[#plan.unmatchableExamples + 1] =
                    string.format("%s: %s", tostring(row.path or row.absPath), row.unmatchable)
            end
        elseif row.verdict == nil then
            counts.noVerdict = counts.noVerdict + 1
        else
            local photos, tried = {}, {}
            for index, candidate in ipairs({ row.absPath, row.partnerAbs }) do
                local mapped, hit = CullPaths.remap(candidate, rule)
                if hit and index == 1 then
                    plan.remapped = plan.remapped + 1
                end
                tried[#tried + 1] = mapped
                local photo = lookup(mapped)
                if photo then
                    photos[#photos + 1] = photo
                    if index == 2 and #photos == 1 then
                        counts.viaPartner = counts.viaPartner + 1
                    end
                end
            end
            if #photos == 0 then
                counts.notFound = counts.notFound + 1
                if #plan.notFoundExamples < 5 then
                    plan.notFoundExamples[#plan.notFoundExamples + 1] = tried[1]
                end
            else
                counts.matched = counts.matched + 1
            end
            for _, photo in ipairs(photos) do
                local key = CullPlan.photoKey(photo)
                if seen[key] then
                    counts.duplicates = counts.duplicates + 1
                else
                    seen[key] = true
                    local verdict = row.verdict
                    if verdict == "reject" and row.protected ~= nil then
                        verdict = "keep"  -- the user's choice elsewhere wins, as cull's own XMP writer does
                        counts.protected = counts.protected + 1
                    end
                    local state = readState(photo)
                    local decision = CullPlan.evaluate(verdict, state, settings)
                    if decision.status == "apply" then
                        local ops = decision.ops
                        if ops.setPick then counts.toReject = counts.toReject + 1 end
                        if ops.setLabel then counts.toLabel = counts.toLabel + 1 end
                        if decision.viaCopy then
                            counts.clearedViaCopy = counts.clearedViaCopy + 1
                        elseif ops.clearPick or ops.clearLabel then
                            counts.toClear = counts.toClear + 1
                        end
                        -- the verdict decided on (keep for a protected reject): the write re-checks with it
                        plan.actions[#plan.actions + 1] = {
                            photo = photo, row = row, verdict = verdict, ops = ops, receipt = decision.receipt,
                        }
                    elseif decision.status == "handSet" then
                        counts.handSet = counts.handSet + 1
                        if decision.viaCopy then
                            counts.handSetViaCopy = counts.handSetViaCopy + 1
                        end
                        plan.handSet[#plan.handSet + 1] = { photo = photo, row = row, reasons = decision.reasons }
                    elseif decision.status == "already" then
                        counts.already = counts.already + 1
                    else
                        counts.keep = counts.keep + 1
                    end
                end
            end
        end
        if tick and rowNo % CullPlan.TICK_ROWS == 0 and tick(rowNo, rowNo / total) then
            return nil
        end
    end
    return plan
end

local function plural(n, one, many)
    return string.format("%d %s", n, n == 1 and one or (many or one .. "s"))
end

--- Preview lines for the dialog.
function CullPlan.summary(plan, settings)
    local c = plan.counts
    local label = CullPlan.uncertainLabel(settings)
    local lines = {
        string.format("%s in the report; %d matched in this catalog, %d not in the catalog.",
            plural(c.rows, "photo"), c.matched, c.notFound),
        string.format("Will flag %s as Rejected.", plural(c.toReject, "photo")),
        label and string.format("Will give %s the %s label (uncertain).", plural(c.toLabel, "photo"), label)
            or "Uncertain photos get no label (labelling is off).",
        string.format("Already flagged/rated/labelled by hand (or cull's flag/label taken back), never changed: %d.",
            c.handSet),
    }
    if c.handSetViaCopy > 0 then
        lines[#lines + 1] = string.format(
            "Of these, a virtual copy is flagged/rated/labelled by hand: %d (deleting a master deletes its copies).",
            c.handSetViaCopy)
    end
    if c.clearedViaCopy > 0 then
        lines[#lines + 1] = string.format("Will take cull's earlier flag or label off %s whose virtual copy is "
            .. "flagged/rated/labelled by hand (deleting a master deletes its copies).",
            plural(c.clearedViaCopy, "master photo"))
    end
    if c.protected > 0 then
        lines[#lines + 1] = string.format(
            "Rejected by cull but rated, picked or kept by you elsewhere, never flagged: %d.", c.protected)
    end
    if c.toClear > 0 then
        lines[#lines + 1] = string.format("Verdict changed since the last apply: %s will lose what cull set.",
            plural(c.toClear, "photo"))
    end
    if c.already > 0 then
        lines[#lines + 1] = string.format("Already applied earlier: %d.", c.already)
    end
    if c.viaPartner > 0 then
        lines[#lines + 1] = string.format("Matched through the paired RAW/JPEG: %d.", c.viaPartner)
    end
    if c.unmatchable > 0 then
        lines[#lines + 1] = string.format("Cannot be matched (see below): %d.", c.unmatchable)
    end
    if c.noVerdict > 0 then
        lines[#lines + 1] = string.format("Not judged by cull (unreadable files): %d.", c.noVerdict)
    end
    if c.unreadable > 0 then
        lines[#lines + 1] = string.format("Report lines that could not be read: %d.", c.unreadable)
    end
    for _, example in ipairs(plan.unmatchableExamples) do
        lines[#lines + 1] = "  " .. example
    end
    return lines
end

--- The explanation shown when nothing matched: the one first-run failure that matters.
function CullPlan.zeroMatchHelp(plan, settings)
    local example = plan.notFoundExamples[1]
    local lines = {
        "None of the photos in this report is in this catalog.",
    }
    if example then
        lines[#lines + 1] = "The plug-in looked for, e.g.:  " .. example
    end
    if plan.rule and plan.remapped == 0 then
        lines[#lines + 1] = string.format("The path prefix \"%s\" matched no path in the report.", plan.rule.from)
    end
    lines[#lines + 1] = "If cull ran on another machine or saw the photos under another folder "
        .. "(NAS mount, other drive letter, another OS), set \"Report path prefix\" to the start of the "
        .. "paths in the report and \"Lightroom path prefix\" to the same folder as Lightroom shows it "
        .. "(Library > Folders, right-click > Show in Finder/Explorer)."
    if CullPaths.isWindowsStyle(example or "") and not (settings and settings.ignoreCase) then
        lines[#lines + 1] = "The paths are Windows paths: try \"Ignore case\"."
    end
    lines[#lines + 1] = "Photos must be imported into Lightroom first; the plug-in never imports."
    return table.concat(lines, "\n")
end

--- Decide undo for one photo with a receipt. Returns { ops, changedSince }.
function CullPlan.undoDecision(state)
    local receipt = state.receipt or {}
    local ops, changedSince = { clearReceipt = true }, false
    if receipt.setPick == "-1" then
        if state.pick == -1 then ops.clearPick = true else changedSince = true end
    end
    if receipt.setLabel ~= nil then
        if state.label == receipt.setLabel then ops.clearLabel = true else changedSince = true end
    end
    return { ops = ops, changedSince = changedSince }
end

--- Build the undo plan over the photos that carry this plug-in's receipt.
function CullPlan.buildUndo(photos, readState)
    local plan = { actions = {}, counts = { photos = 0, clearFlags = 0, clearLabels = 0, changedSince = 0 } }
    local c = plan.counts
    for _, photo in ipairs(photos) do
        local decision = CullPlan.undoDecision(readState(photo))
        c.photos = c.photos + 1
        if decision.ops.clearPick then c.clearFlags = c.clearFlags + 1 end
        if decision.ops.clearLabel then c.clearLabels = c.clearLabels + 1 end
        if decision.changedSince then c.changedSince = c.changedSince + 1 end
        plan.actions[#plan.actions + 1] = { photo = photo, ops = decision.ops, undo = true }
    end
    return plan
end

return CullPlan
