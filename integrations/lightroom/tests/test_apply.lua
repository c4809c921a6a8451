-- The stand-in SDK is strict, and CullApply writes through it in chunks.
local T = ...
local sdk = require "sdk"

local function newWorld(prefs)
    return sdk.new { pluginDir = T.pluginDir, prefs = prefs }
end

--- Run fn inside a task of the world; returns what fn returned (raises what it raised).
local function inTask(world, fn)
    local results, err
    world.modules.LrTasks.startAsyncTask(function()
        local r = { world.modules.LrTasks.pcall(fn) }
        if r[1] then results = r else err = r[2] end
    end)
    local failures = world:runTasks()
    if failures[1] then error(failures[1], 0) end
    if err then error(err, 0) end
    return unpack(results, 2, table.maxn(results))
end

T.test("sdk stand-in: writes outside withWriteAccessDo raise", function()
    local world = newWorld()
    local photo = world.catalog:addTestPhoto { path = "/p/a.jpg" }
    T.raises(function() photo:setRawMetadata("pickStatus", -1) end, "withWriteAccessDo", "setRawMetadata")
    T.raises(function() photo:setPropertyForPlugin(_PLUGIN, "verdict", "reject") end, "withWriteAccessDo", "property")
    T.eq(photo.pick, 0, "unchanged")
end)

T.test("sdk stand-in: rating 0 raises, nil clears; bad pick raises; undeclared field raises", function()
    local world = newWorld()
    local photo = world.catalog:addTestPhoto { path = "/p/a.jpg", rating = 3 }
    inTask(world, function()
        world.catalog:withWriteAccessDo("t", function()
            T.raises(function() photo:setRawMetadata("rating", 0) end, "rating", "rating 0")
            photo:setRawMetadata("rating", nil)
            T.raises(function() photo:setRawMetadata("pickStatus", -2) end, "pickStatus", "pick")
            T.raises(function() photo:setRawMetadata("colorNameForLabel", 3) end, "colorNameForLabel", "label type")
            T.raises(function() photo:setPropertyForPlugin(_PLUGIN, "nope", "x") end, "not declared", "field")
            T.raises(function() photo:setPropertyForPlugin(_PLUGIN, "verdict", 1) end, "string", "type")
        end, { timeout = 1 })
    end)
    T.eq(photo.rating, nil, "cleared rating is nil")
end)

T.test("sdk stand-in: colour labels as documented: six names, any case; other text is a label of no colour",
    function()
    local world = newWorld()
    local photo = world.catalog:addTestPhoto { path = "/p/a.jpg" }
    T.eq(photo:getFormattedMetadata("label"), "", "no label: no text")
    inTask(world, function()
        world.catalog:withWriteAccessDo("t", function()
            photo:setRawMetadata("colorNameForLabel", "Yellow")
            T.eq(photo:getRawMetadata("colorNameForLabel"), "yellow", "not case sensitive")
            T.eq(photo:getFormattedMetadata("label"), "Yellow", "the default set's text")
            photo:setRawMetadata("colorNameForLabel", "Review")
            T.eq(photo:getRawMetadata("colorNameForLabel"), "none", "a label of no colour reads as none")
            T.eq(photo:getFormattedMetadata("label"), "Review", "its text is still there")
            photo:setRawMetadata("colorNameForLabel", "none")
            T.eq(photo:getFormattedMetadata("label"), "", "cleared")
        end, { timeout = 1 })
    end)
end)

T.test("sdk stand-in: a virtual copy has its master's path; findPhotoByPath gives the master", function()
    local world = newWorld()
    local master = world.catalog:addTestPhoto { path = "/p/a.jpg" }
    local copy = world.catalog:addTestVirtualCopy(master, { pick = 1 })
    T.eq(copy:getRawMetadata("path"), "/p/a.jpg", "same path")
    T.eq(copy:getRawMetadata("isVirtualCopy"), true, "copy"); T.eq(master:getRawMetadata("isVirtualCopy"), false, "master")
    T.eq(copy:getRawMetadata("masterPhoto"), master, "masterPhoto")
    T.eq(master:getRawMetadata("virtualCopies")[1], copy, "virtualCopies")
    T.eq(master:getRawMetadata("countVirtualCopies"), 1, "count")
    T.eq(#world.catalog:getAllPhotos(), 2, "getAllPhotos lists both")
    T.eq(world.catalog:findPhotoByPath("/p/a.jpg"), master, "the master by path")
    local meta = world.catalog:batchGetRawMetadata({ master, copy }, { "path", "isVirtualCopy" })
    T.eq(meta[copy].isVirtualCopy, true, "batch read")
end)

--- Like T.raises, for functions that yield (LrTasks.pcall instead of pcall).
local function raisesInTask(world, fn, pattern, what)
    local ok, err = world.modules.LrTasks.pcall(fn)
    T.eq(ok, false, what .. " raised")
    T.contains(tostring(err), pattern, what)
end

T.test("sdk stand-in: yielding inside write access raises; plain pcall around a yield fails", function()
    local world = newWorld()
    inTask(world, function()
        raisesInTask(world, function()
            world.catalog:withWriteAccessDo("t", function() world.modules.LrTasks.yield() end)
        end, "not allowed within", "yield in write access")
        raisesInTask(world, function()
            world.catalog:withWriteAccessDo("t", function()
                world.catalog:withWriteAccessDo("inner", function() end)
            end)
        end, "nested", "nested write access")
        raisesInTask(world, function()
            world.catalog:withWriteAccessDo("t", function()
                world.modules.LrDialogs.message("hi")
            end)
        end, "not allowed within", "dialog in write access")
        local ok, err = pcall(world.modules.LrTasks.yield)
        T.eq(ok, false, "plain pcall cannot yield"); T.contains(err, "yield across", "Lua 5.1 message")
        local ok2 = world.modules.LrTasks.pcall(world.modules.LrTasks.yield)
        T.eq(ok2, true, "LrTasks.pcall can")
    end)
    T.raises(function() world.catalog:withWriteAccessDo("t", function() end) end, "within a task", "outside task")
    T.eq(world.catalog:findPhotoByPath("/nope"), nil, "unknown path is nil")
end)

local function plannedWorld(n, specs)
    local world = newWorld()
    local rows = {}
    for i = 1, n do
        local path = string.format("/p/IMG_%04d.JPG", i)
        local spec = specs and specs[i] or {}
        spec.path = path
        world.catalog:addTestPhoto(spec)
        rows[i] = { absPath = path, path = path, verdict = i % 3 == 0 and "uncertain" or "reject", score = 0.01 * (i % 50),
            kind = "defocus" }
    end
    local CullGlue = require "CullGlue"
    local plan = CullGlue.plan(world.catalog, { rows = rows }, {})
    return world, plan
end

T.test("apply: 450 photos -> 3 write-access steps of at most 200, one per undo step", function()
    local world, plan = plannedWorld(450)
    T.eq(#plan.actions, 450, "planned")
    local CullApply = require "CullApply"
    local result = inTask(world, function()
        local progress = world.modules.LrProgressScope { title = "t" }
        return CullApply.run { catalog = world.catalog, actions = plan.actions, plugin = _PLUGIN, settings = {},
            progress = progress, actionName = "Apply cull verdicts" }
    end)
    local steps = world:stepsNamed("Apply cull verdicts")
    T.eq(#steps, 3, "steps"); T.eq(result.chunks, 3, "chunks"); T.eq(result.done, 450, "done")
    local photos = {}
    for _, w in ipairs(steps[1].writes) do photos[w.photo] = true end
    local count = 0
    for _ in pairs(photos) do count = count + 1 end
    T.eq(count, 200, "first step touches 200 photos")
    T.eq(world.catalog.photos[1].pick, -1, "rejected"); T.eq(world.catalog.photos[3].label, "yellow", "uncertain")
    T.eq(world.catalog.photos[3].pick, 0, "uncertain not flagged")
    T.eq(world.catalog.photos[1].props.verdict, "reject", "receipt"); T.eq(world.catalog.photos[1].props.setPick, "-1", "pick receipt")
    T.eq(world.catalog.photos[1].props.score, "0.010", "score receipt"); T.eq(world.catalog.photos[1].props.kind, "defocus", "kind")
    for _, w in ipairs(world.writes) do
        T.ok(w.key ~= "rating", "rating never written")
    end
end)

T.test("sdk stand-in: progress scopes record captions and portions; a user's cancel lands on a yield", function()
    local world = newWorld()
    local LrProgressScope = world.modules.LrProgressScope
    local plain = LrProgressScope { title = "t", caption = "first" }
    plain:setCaption("second"); plain:setPortionComplete(3, 4); plain:setPortionComplete(0.5)
    T.eq(plain.captions[2], "second", "captions in turn"); T.eq(plain.fractions[1], 0.75, "3 of 4")
    T.eq(plain.fractions[2], 0.5, "nil total: 0..1"); T.eq(plain:getPortionComplete(), 0.5, "last amount")
    T.raises(function() plain:setPortionComplete("1") end, "numbers", "a string portion")
    plain:cancel(); T.ok(plain:isCanceled(), "cancel() is seen by isCanceled")
    local shown = LrProgressScope { title = "u" }
    local allowed = LrProgressScope { title = "v" }
    allowed:setCancelable(true)
    world.cancelWhen = function() return true end
    T.ok(not allowed:isCanceled(), "no click lands while the plug-in does not yield")
    inTask(world, function()
        world.modules.LrFunctionContext.callWithContext("c", function(context)
            local attached = LrProgressScope { title = "w", functionContext = context }
            world.modules.LrTasks.yield()
            T.ok(not attached.finished, "shown while its context runs")
        end)
    end)
    T.ok(allowed:isCanceled() and allowed.canceledByUser, "the click landed while the task yielded")
    T.ok(not shown:isCanceled(), "not on a scope that did not allow it")
    T.ok(world.progressScopes[4].finished, "a scope with a functionContext ends with it")
end)

T.test("apply: cancel between chunks stops, what was written stays, rest not reached", function()
    local world, plan = plannedWorld(450)
    world.cancelAtPortion = 200
    local CullApply = require "CullApply"
    local result = inTask(world, function()
        local progress = world.modules.LrProgressScope { title = "t" }
        progress:setCancelable(true) -- the user's cancel lands only on a scope that allows it
        return CullApply.run { catalog = world.catalog, actions = plan.actions, plugin = _PLUGIN, settings = {},
            progress = progress, actionName = "Apply cull verdicts" }
    end)
    T.eq(result.stoppedBecause, "canceled", "canceled"); T.eq(result.done, 200, "done")
    T.eq(result.notReached, 250, "not reached"); T.eq(#world:stepsNamed("Apply cull verdicts"), 1, "one step")
    T.eq(world.catalog.photos[200].pick, -1, "200 written"); T.eq(world.catalog.photos[201].pick, 0, "201 untouched")
end)

T.test("apply: a photo changed by hand after the preview is left alone", function()
    local world, plan = plannedWorld(5)
    world.catalog.photos[2].pick = 1        -- picked while the dialog was open
    world.catalog.photos[4].rating = 4      -- rated
    local CullApply = require "CullApply"
    local result = inTask(world, function()
        return CullApply.run { catalog = world.catalog, actions = plan.actions, plugin = _PLUGIN, settings = {} }
    end)
    T.eq(result.changed, 2, "changed"); T.eq(result.done, 3, "done")
    T.eq(world.catalog.photos[2].pick, 1, "pick kept"); T.eq(world.catalog.photos[4].pick, 0, "rated photo not rejected")
    T.eq(world.catalog.photos[4].props.verdict, nil, "no receipt on a photo left alone")
end)

--- Every write that touched one of photos (a set).
local function writesTo(world, photos)
    local found = {}
    for _, w in ipairs(world.writes) do
        if photos[w.photo] then found[#found + 1] = w end
    end
    return found
end

T.test("apply: a master whose virtual copy is rated, picked or labelled: nothing written, counted hand-set",
    function()
    local world = newWorld()
    local c = world.catalog
    local rated = c:addTestPhoto { path = "/p/rated.jpg" }
    local ratedCopy = c:addTestVirtualCopy(rated, { rating = 3 })
    local picked = c:addTestPhoto { path = "/p/picked.jpg" }
    local pickedCopy = c:addTestVirtualCopy(picked, { pick = 1 })
    local labelled = c:addTestPhoto { path = "/p/labelled.jpg" }
    c:addTestVirtualCopy(labelled) -- an unmarked copy beside a marked one
    local labelledCopy = c:addTestVirtualCopy(labelled, { labelText = "Review" }) -- a label of no colour
    local plain = c:addTestPhoto { path = "/p/plain.jpg" }
    local plainCopy = c:addTestVirtualCopy(plain)
    local rows = {}
    for i, p in ipairs({ rated, picked, labelled, plain }) do
        rows[i] = { absPath = p.path, path = p.path, verdict = "reject", score = 0.01, kind = "defocus" }
    end
    local CullGlue, CullPlan = require "CullGlue", require "CullPlan"
    local plan = CullGlue.plan(world.catalog, { rows = rows }, {})
    T.eq(plan.counts.handSet, 3, "hand-set"); T.eq(plan.counts.handSetViaCopy, 3, "through a copy")
    T.eq(plan.counts.toReject, 1, "only the master with an unmarked copy"); T.eq(#plan.actions, 1, "one action")
    T.eq(plan.handSet[1].reasons[1], "a virtual copy is rated", "rated")
    T.eq(plan.handSet[2].reasons[1], "a virtual copy is picked", "picked")
    T.eq(plan.handSet[3].reasons[1], "a virtual copy is labelled", "labelled")
    T.contains(table.concat(CullPlan.summary(plan, {}), "\n"), "never changed: 3", "summary")
    local CullApply = require "CullApply"
    local result = inTask(world, function()
        return CullApply.run { catalog = world.catalog, actions = plan.actions, plugin = _PLUGIN, settings = {} }
    end)
    T.eq(result.done, 1, "done")
    local kept = { [rated] = true, [picked] = true, [labelled] = true, [ratedCopy] = true, [pickedCopy] = true,
        [labelledCopy] = true, [plainCopy] = true }
    T.eq(#writesTo(world, kept), 0, "nothing written to those masters or to any copy")
    T.eq(rated.pick, 0, "not Rejected"); T.eq(rated.props.verdict, nil, "no receipt")
    T.eq(ratedCopy.rating, 3, "the copy keeps its stars"); T.eq(pickedCopy.pick, 1, "and its flag")
    T.eq(plain.pick, -1, "a master with an unmarked copy is flagged"); T.eq(plainCopy.pick, 0, "its copy is not")
end)

T.test("apply: a virtual copy marked by hand after the preview keeps its master as it is", function()
    local world = newWorld()
    local master = world.catalog:addTestPhoto { path = "/p/a.jpg" }
    local copy = world.catalog:addTestVirtualCopy(master)
    local plan = require("CullGlue").plan(world.catalog,
        { rows = { { absPath = "/p/a.jpg", path = "/p/a.jpg", verdict = "reject" } } }, {})
    T.eq(#plan.actions, 1, "planned")
    copy.rating = 2 -- starred while the preview was open
    local result = inTask(world, function()
        return require("CullApply").run { catalog = world.catalog, actions = plan.actions, plugin = _PLUGIN,
            settings = {} }
    end)
    T.eq(result.changed, 1, "skipped as changed"); T.eq(result.done, 0, "nothing done")
    T.eq(#world.writes, 0, "no write"); T.eq(master.pick, 0, "master not Rejected")
end)

T.test("apply: cull's earlier flag comes off a master whose copy was marked since; nothing else is written",
    function()
    local world = newWorld()
    local c = world.catalog
    local rows = {}
    for i, name in ipairs({ "a", "b" }) do
        local path = "/p/" .. name .. ".jpg"
        rows[i] = { absPath = path, path = path, verdict = "reject", score = 0.01, kind = "defocus" }
        c:addTestPhoto { path = path, pick = -1, props = { verdict = "reject", setPick = "-1", score = "0.010" } }
    end
    local a, b = c.photos[1], c.photos[2]
    local aCopy = c:addTestVirtualCopy(a, { rating = 2 })
    local bCopy = c:addTestVirtualCopy(b, { pick = 1 })
    local CullGlue, CullApply, CullPlan = require "CullGlue", require "CullApply", require "CullPlan"
    local function run(actions)
        return inTask(world, function()
            return CullApply.run { catalog = c, actions = actions, plugin = _PLUGIN, settings = {} }
        end)
    end
    local plan = CullGlue.plan(c, { rows = rows }, {})
    T.eq(plan.counts.clearedViaCopy, 2, "both flags to take off"); T.eq(#plan.actions, 2, "actions")
    b.pick = 0 -- the user unflagged this master by hand between the preview and the write
    local result = run(plan.actions)
    T.eq(result.done, 1, "done"); T.eq(result.changed, 1, "the master changed by hand is left alone")
    T.eq(a.pick, 0, "cull's flag off"); T.eq(a.props.verdict, nil, "receipt cleared"); T.eq(a.props.score, nil, "score")
    T.eq(aCopy.rating, 2, "the copy keeps its stars"); T.eq(bCopy.pick, 1, "and its flag")
    T.eq(b.props.verdict, "reject", "nothing written to the master left alone")
    T.eq(#writesTo(world, { [aCopy] = true, [bCopy] = true, [b] = true }), 0, "no write to the copies or to b")
    local writes = #world.writes
    local again = CullGlue.plan(c, { rows = rows }, {})
    T.eq(#again.actions, 0, "re-applying plans nothing"); T.eq(again.counts.clearedViaCopy, 0, "nothing to take off")
    run(again.actions)
    T.eq(#world.writes, writes, "nothing written")
    local undo = CullPlan.buildUndo({ a }, function(photo) return CullApply.readState(photo, _PLUGIN) end)
    T.eq(undo.counts.clearFlags, 0, "undo: no flag of cull's on it"); T.eq(undo.counts.changedSince, 0, "nor a receipt")
    T.eq(#c:findPhotosWithProperty(_PLUGIN, "verdict"), 1, "undo finds only b, whose flag the user took back")
end)

T.test("apply: only a photo with virtual copies has its copies read", function()
    local world = newWorld()
    local reads = {}
    local function watch(photo)
        local get = getmetatable(photo).__index.getRawMetadata
        photo.getRawMetadata = function(self, key)
            reads[#reads + 1] = { photo = self, key = key }
            return get(self, key)
        end
        return photo
    end
    local lone = watch(world.catalog:addTestPhoto { path = "/p/lone.jpg" })
    local master = watch(world.catalog:addTestPhoto { path = "/p/master.jpg" })
    local copy = watch(world.catalog:addTestVirtualCopy(master, { rating = 1 }))
    local CullApply = require "CullApply"
    local loneState = CullApply.readState(lone, _PLUGIN)
    T.eq(loneState.copies, nil, "no copies"); T.eq(CullApply.readState(copy, _PLUGIN).copies, nil, "a copy has none")
    for _, r in ipairs(reads) do
        T.ok(r.key ~= "virtualCopies", "virtualCopies read only for a master with copies")
    end
    local state = CullApply.readState(master, _PLUGIN)
    T.eq(#state.copies, 1, "one copy"); T.eq(state.copies[1].rating, 1, "its rating")
    T.eq(state.copies[1].copies, nil, "copies are not read recursively")
end)

T.test("apply: busy catalog -> 'aborted' stops cleanly; a failing photo does not stop its chunk", function()
    local world, plan = plannedWorld(3)
    world.busy = true
    local CullApply = require "CullApply"
    local result = inTask(world, function()
        return CullApply.run { catalog = world.catalog, actions = plan.actions, plugin = _PLUGIN, settings = {} }
    end)
    T.eq(result.stoppedBecause, "busy", "busy"); T.eq(result.notReached, 3, "nothing written")
    world.busy = false
    local broken = world.catalog.photos[2]
    broken.setRawMetadata = function() error("disk full") end
    local again = inTask(world, function()
        return CullApply.run { catalog = world.catalog, actions = plan.actions, plugin = _PLUGIN, settings = {} }
    end)
    T.eq(again.failed, 1, "one failed"); T.eq(again.done, 2, "others done"); T.contains(again.failures[1], "disk full", "why")
end)
