--[[ CullApply: write a plan into the catalog, in chunks, one undo step each.

Works on the SDK objects it is given (catalog, photos, progress scope) and imports nothing, so a
stand-in SDK can drive it. Each chunk is one catalog:withWriteAccessDo call; inside it nothing
yields (no dialogs, no sleeps, no progress waits): the photo's state (with its virtual copies') is
re-read and the decision re-checked with the verdict the plan decided on (keep for a protected
reject); a photo whose decision is no longer the previewed one (it or one of its virtual copies
changed by hand since the preview) is skipped. Then
pickStatus / colour label and the receipt (plug-in metadata) are written. The rating is never written.
]]

local CullPlan = require "CullPlan"

local CullApply = {}

CullApply.CHUNK_SIZE = 200
CullApply.FIELDS = { "verdict", "setPick", "setLabel", "score", "kind" }
CullApply.WRITE_TIMEOUT = 30 -- seconds to wait for write access before giving up on a chunk

--- One photo's own flag, rating, label and receipt.
local function readOwn(photo, plugin)
    return {
        pick = photo:getRawMetadata("pickStatus") or 0,
        rating = photo:getRawMetadata("rating"),
        label = photo:getRawMetadata("colorNameForLabel"),
        labelText = photo:getFormattedMetadata("label"), -- a label of no colour of the active set
        receipt = {
            verdict = photo:getPropertyForPlugin(plugin, "verdict"),
            setPick = photo:getPropertyForPlugin(plugin, "setPick"),
            setLabel = photo:getPropertyForPlugin(plugin, "setLabel"),
        },
    }
end

--- Read a photo's state (outside or inside write access; never yields). A master photo's state also
-- holds its virtual copies' states (state.copies): deleting or removing a master in Lightroom takes
-- its copies with it, so a copy the user flagged, rated or labelled makes the master the user's too.
-- Only a photo with copies costs more than one extra read ('countVirtualCopies' is 0 for the rest,
-- and for a virtual copy itself).
function CullApply.readState(photo, plugin)
    local state = readOwn(photo, plugin)
    local count = photo:getRawMetadata("countVirtualCopies")
    if type(count) == "number" and count > 0 then
        local copies = {}
        for _, copy in ipairs(photo:getRawMetadata("virtualCopies") or {}) do
            copies[#copies + 1] = readOwn(copy, plugin)
        end
        state.copies = copies
    end
    return state
end

local function formatScore(score)
    if type(score) ~= "number" then
        return nil
    end
    return string.format("%.3f", score)
end

--- Write one action's ops (must run inside withWriteAccessDo).
local function writeOps(photo, ops, plugin, receipt, row)
    if ops.setPick then
        photo:setRawMetadata("pickStatus", ops.setPick)
    elseif ops.clearPick then
        photo:setRawMetadata("pickStatus", 0)
    end
    if ops.setLabel then
        photo:setRawMetadata("colorNameForLabel", ops.setLabel)
    elseif ops.clearLabel then
        photo:setRawMetadata("colorNameForLabel", "none")
    end
    if ops.clearReceipt then
        for _, field in ipairs(CullApply.FIELDS) do
            photo:setPropertyForPlugin(plugin, field, nil)
        end
    elseif receipt then
        photo:setPropertyForPlugin(plugin, "verdict", receipt.verdict)
        photo:setPropertyForPlugin(plugin, "setPick", receipt.setPick)
        photo:setPropertyForPlugin(plugin, "setLabel", receipt.setLabel)
        photo:setPropertyForPlugin(plugin, "score", receipt.verdict and row and formatScore(row.score) or nil)
        photo:setPropertyForPlugin(plugin, "kind", receipt.verdict and row and row.kind or nil)
    end
end

local OPS = { "setPick", "clearPick", "setLabel", "clearLabel" }

local function sameOps(a, b)
    for _, key in ipairs(OPS) do
        if a[key] ~= b[key] then
            return false
        end
    end
    return true
end

--- Apply one action inside write access; returns "done", "changed" (left alone) or "failed", message.
local function applyOne(action, plugin, settings)
    local photo = action.photo
    local ok, result = pcall(function()
        local state = CullApply.readState(photo, plugin)
        if action.undo then
            local decision = CullPlan.undoDecision(state)
            writeOps(photo, decision.ops, plugin, nil, nil)
            return "done"
        end
        local decision = CullPlan.evaluate(action.verdict, state, settings)
        if decision.status ~= "apply" then
            return decision.status == "handSet" and "changed" or "done"
        end
        if action.ops and not sameOps(decision.ops, action.ops) then
            return "changed" -- not what the preview promised: the photo changed since; leave it
        end
        writeOps(photo, decision.ops, plugin, decision.receipt, action.row)
        return "done"
    end)
    if ok then
        return result
    end
    return "failed", tostring(result)
end

--- Run the plan's actions.
-- args: catalog, actions, plugin (the _PLUGIN object or its id), settings, progress (optional scope
-- with setPortionComplete / isCanceled / setCaption), actionName (the Undo menu's name for each
-- chunk), chunkSize. Returns a result table with counts and, if any, stoppedBecause.
function CullApply.run(args)
    local actions, catalog = args.actions, args.catalog
    local chunkSize = args.chunkSize or CullApply.CHUNK_SIZE
    local progress = args.progress
    local total = #actions
    local result = { done = 0, changed = 0, failed = 0, notReached = 0, chunks = 0, failures = {} }
    local index = 1
    while index <= total do
        if progress and progress:isCanceled() then
            result.stoppedBecause = "canceled"
            break
        end
        local last = math.min(index + chunkSize - 1, total)
        local chunkResults = {}
        local status = catalog:withWriteAccessDo(args.actionName or "cull verdicts", function()
            for i = index, last do
                local outcome, message = applyOne(actions[i], args.plugin, args.settings)
                chunkResults[#chunkResults + 1] = { outcome = outcome, message = message, action = actions[i] }
            end
        end, { timeout = CullApply.WRITE_TIMEOUT })
        if status == "aborted" then
            result.stoppedBecause = "busy"
            break
        end
        result.chunks = result.chunks + 1
        for _, r in ipairs(chunkResults) do
            result[r.outcome] = result[r.outcome] + 1
            if r.outcome == "failed" and #result.failures < 10 then
                result.failures[#result.failures + 1] = r.message
            end
        end
        index = last + 1
        if progress then
            progress:setPortionComplete(last, total)
            progress:setCaption(string.format("%d of %d photos", last, total))
        end
    end
    result.notReached = total - (index - 1)
    return result
end

return CullApply
