--[[ A stand-in for the Lightroom Classic SDK, strict where the SDK documentation (and reports
against real Lightroom) say the real one is strict:

- tasks: LrTasks.startAsyncTask / LrFunctionContext.postAsyncTaskWithContext queue a coroutine
  that world:runTasks() drives; yielding calls (dialogs, LrTasks.yield/sleep, withWriteAccessDo,
  LrTasks.pcall) raise outside a task;
- yielding inside catalog:withWriteAccessDo raises; so does nesting write access;
- Lua's own pcall around a yielding call fails as in Lightroom ("attempt to yield across
  metamethod/C-call boundary"); LrTasks.pcall works;
- photo:setRawMetadata / setPropertyForPlugin / createSmartCollection raise outside write access;
  setRawMetadata('rating', 0) raises (a cleared rating is nil); pickStatus must be -1/0/1;
  unknown keys raise;
- colour labels as the API reference documents them: setRawMetadata('colorNameForLabel', v) takes
  red/yellow/green/blue/purple/none, not case sensitive; any other string becomes a label of that
  text with no colour (the white label). getRawMetadata('colorNameForLabel') is one of the six,
  'none' for such a label; getFormattedMetadata('label') is the label's text ("Yellow" for the
  default label set's yellow, "" for no label);
- virtual copies (Catalog:addTestVirtualCopy) as the API reference documents them: same 'path' as
  their master, getRawMetadata('isVirtualCopy') true, 'masterPhoto' the master, the master's
  'virtualCopies' / 'countVirtualCopies' list them; getAllPhotos includes them; findPhotoByPath
  returns the master (what plug-ins rely on; the reference does not say);
- plug-in properties must be declared in the plug-in's metadata provider (CullMetadata.lua) with
  the declared data type; findPhotosWithProperty returns photos that carry the field;
- findPhotoByPath is an exact (case-sensitive) match and returns nil for unknown paths;
- withWriteAccessDo with timeoutParams returns "executed", or "aborted" when the catalog is busy;
  without timeoutParams a busy catalog raises.
- progress scopes (LrProgressScope) as the API reference documents them: title and caption (the
  constructor's, then setCaption), setPortionComplete(amountDone, totalAmount) with totalAmount nil
  meaning [0..1], isCanceled true once cancel() was called, done() / isDone(), getParentScope();
  with functionContext the scope is done when that function context ends, however it ends. The
  reference does not say whether a new scope lets the user cancel it: here it does only after
  setCancelable(true). The user's click on the cancel button (world.cancelWhen, world.cancelAtPortion)
  lands only on a scope that allows it and is not done.
Each world records write-access steps, metadata writes, dialogs and messages for assertions.
]]

local sdk = {}

local PLUGIN_MODULES = { "CullJson", "CullCsv", "CullReport", "CullPaths", "CullPlan", "CullApply", "CullGlue" }

local World = {}
World.__index = World

local function pluginIdOf(plugin)
    if type(plugin) == "table" then
        return plugin.id
    end
    return plugin
end

--- New world: fresh globals (import, _PLUGIN), fresh plug-in modules, an empty catalog.
-- opts.pluginDir (required), opts.prefs (initial prefs table)
function sdk.new(opts)
    local world = setmetatable({}, World)
    world.pluginDir = opts.pluginDir
    world.prefs = opts.prefs or {}
    world.tasks = {}
    world.currentTask = nil
    world.writeDepth = 0
    world.busy = false
    world.steps = {}          -- { name = ..., writes = {...} } per executed withWriteAccessDo
    world.writes = {}         -- every metadata write: { photo, key, value, plugin = bool }
    world.messages = {}       -- LrDialogs.message calls
    world.dialogs = {}        -- presentModalDialog / confirm / runOpenPanel calls
    world.answers = { presentModalDialog = {}, confirm = {}, runOpenPanel = {} }
    world.errors = {}         -- errors shown through attachErrorDialogToFunctionContext
    world.progressScopes = {}  -- every LrProgressScope made, in order (see Scope below for what each records)
    world.cancelAtPortion = nil  -- the user cancels a scope as soon as its amountDone reaches this
    world.cancelWhen = nil    -- function(scope, world): true when the user cancels scope, asked whenever the task yields
    world.yields = 0
    world.taskYields = 0      -- LrTasks.yield calls (the plug-in letting Lightroom breathe)
    world.events = {}         -- order of look-ups, dialogs and write steps: { kind, detail }

    local info = dofile(opts.pluginDir .. "/Info.lua")
    world.info = info
    local metadata = dofile(opts.pluginDir .. "/" .. info.LrMetadataProvider)
    world.fields = {}
    for _, field in ipairs(metadata.metadataFieldsForPhotos) do
        world.fields[field.id] = field
    end
    world.plugin = { id = info.LrToolkitIdentifier, path = opts.pluginDir }
    world.catalog = world:newCatalog()
    world.modules = world:makeModules()

    _G.import = function(name)
        local m = world.modules[name]
        if not m then
            error("import: unknown SDK namespace " .. tostring(name), 2)
        end
        return m
    end
    _G._PLUGIN = world.plugin
    for _, name in ipairs(PLUGIN_MODULES) do
        package.loaded[name] = nil
    end
    return world
end

-- Tasks ---------------------------------------------------------------------------------------

function World:inTask()
    return self.currentTask ~= nil and coroutine.running() ~= nil
end

--- The SDK's yield point: only in a task, never in write access.
function World:yieldPoint(what)
    if not self:inTask() then
        error(what .. ": can only be called from within a task (LrTasks.startAsyncTask)", 3)
    end
    if self.writeDepth > 0 then
        error(what .. ": yielding is not allowed within catalog:withWriteAccessDo", 3)
    end
    self.yields = self.yields + 1
    coroutine.yield("sdk-yield")
    self:userMayCancel() -- the user interface ran while the task waited
end

--- The user's click on a progress scope's cancel button (test hook world.cancelWhen): it can only
-- land while the task yields, on a scope that is shown (not done) and lets the user cancel it.
function World:userMayCancel()
    if not self.cancelWhen then
        return
    end
    for _, scope in ipairs(self.progressScopes) do
        if scope.cancelable and not scope.finished and not scope.canceled and self.cancelWhen(scope, self) then
            scope.canceled, scope.canceledByUser = true, true
        end
    end
end

function World:startTask(fn, name)
    self.tasks[#self.tasks + 1] = { co = coroutine.create(fn), name = name }
end

--- Drive every queued task (and tasks they start) to completion. Returns errors raised by tasks.
function World:runTasks()
    local failures = {}
    local guard = 0
    while #self.tasks > 0 do
        local task = table.remove(self.tasks, 1)
        while coroutine.status(task.co) ~= "dead" do
            guard = guard + 1
            if guard > 1000000 then
                error("runTasks: a task never finishes")
            end
            self.currentTask = task
            local ok, err = coroutine.resume(task.co)
            self.currentTask = nil
            if not ok then
                failures[#failures + 1] = tostring(err)
                break
            end
        end
    end
    return failures
end

-- SDK namespaces ------------------------------------------------------------------------------

function World:makeModules()
    local world = self
    local m = {}

    local LrTasks = {}
    function LrTasks.startAsyncTask(fn, name)
        world:startTask(fn, name)
    end
    function LrTasks.yield()
        world:yieldPoint("LrTasks.yield")
        world.taskYields = world.taskYields + 1
    end
    function LrTasks.sleep()
        world:yieldPoint("LrTasks.sleep")
    end
    function LrTasks.canYield()
        return world:inTask() and world.writeDepth == 0
    end
    --- pcall that lets the protected function yield (runs it in its own coroutine).
    function LrTasks.pcall(fn, ...)
        if not world:inTask() then
            error("LrTasks.pcall: can only be called from within a task", 2)
        end
        local co = coroutine.create(fn)
        local res = { coroutine.resume(co, ...) }
        while true do
            if not res[1] then
                return false, res[2]
            end
            if coroutine.status(co) == "dead" then
                return true, unpack(res, 2, table.maxn(res))
            end
            coroutine.yield(unpack(res, 2, table.maxn(res)))
            res = { coroutine.resume(co) }
        end
    end
    m.LrTasks = LrTasks

    local LrFunctionContext = {}
    local function newContext()
        return {
            cleanup = {}, failure = {},
            addCleanupHandler = function(ctx, f) ctx.cleanup[#ctx.cleanup + 1] = f end,
            addFailureHandler = function(ctx, f) ctx.failure[#ctx.failure + 1] = f end,
        }
    end
    function LrFunctionContext.callWithContext(_, fn, ...)
        local context = newContext()
        local protected = world:inTask() and LrTasks.pcall or pcall
        local res = { protected(fn, context, ...) }
        for _, f in ipairs(context.cleanup) do
            f(res[1], res[2])
        end
        if not res[1] then
            for _, f in ipairs(context.failure) do
                f(false, res[2])
            end
            if context.errorDialog then
                world.errors[#world.errors + 1] = tostring(res[2])
                return
            end
            error(res[2], 0)
        end
        return unpack(res, 2, table.maxn(res))
    end
    function LrFunctionContext.postAsyncTaskWithContext(name, fn, ...)
        local args = { ... }
        world:startTask(function()
            LrFunctionContext.callWithContext(name, fn, unpack(args))
        end, name)
    end
    m.LrFunctionContext = LrFunctionContext

    local function answer(kind, args)
        world:yieldPoint("LrDialogs." .. kind)
        world.events[#world.events + 1] = { "dialog", kind }
        world.dialogs[#world.dialogs + 1] = { kind = kind, args = args }
        local queue = world.answers[kind]
        local a = table.remove(queue, 1)
        if type(a) == "function" then
            return a(args, world)
        end
        if a == nil and kind ~= "runOpenPanel" then
            return "cancel"
        end
        return a
    end
    local LrDialogs = {}
    function LrDialogs.message(title, info, style)
        world:yieldPoint("LrDialogs.message")
        world.messages[#world.messages + 1] = { title = title, info = info, style = style }
    end
    function LrDialogs.confirm(message, info, actionVerb, cancelVerb, otherVerb)
        return answer("confirm", { message = message, info = info, actionVerb = actionVerb,
            cancelVerb = cancelVerb, otherVerb = otherVerb })
    end
    function LrDialogs.presentModalDialog(args)
        assert(type(args.title) == "string" and args.contents, "presentModalDialog: title and contents are required")
        return answer("presentModalDialog", args)
    end
    function LrDialogs.runOpenPanel(args)
        return answer("runOpenPanel", args)
    end
    function LrDialogs.attachErrorDialogToFunctionContext(context)
        context.errorDialog = true
    end
    m.LrDialogs = LrDialogs

    m.LrApplication = { activeCatalog = function() return world.catalog end }
    m.LrPrefs = { prefsForPlugin = function() return world.prefs end }
    m.LrBinding = { makePropertyTable = function() return {} end }

    local factory = setmetatable({ control_spacing = function() return 8 end }, {
        __index = function(_, viewType)
            return function(_, args) return { viewType = viewType, args = args } end
        end,
    })
    m.LrView = {
        osFactory = function() return factory end,
        bind = function(key) return { bind = key } end,
        share = function(key) return { share = key } end,
    }

    -- A scope records: title, caption (the current one) and captions (each in turn), portions
    -- ({ amountDone, totalAmount } per call) and fractions (amountDone / totalAmount, for assertions),
    -- cancelable, canceled (canceledByUser when the test's user did it), finished (done() was called)
    -- and touchedAfterDone (caption or portion set after done()).
    local Scope = {}
    Scope.__index = Scope
    local function touch(scope)
        if scope.finished then
            scope.touchedAfterDone = scope.touchedAfterDone + 1
        end
    end
    Scope.setPortionComplete = function(scope, done, total)
        if type(done) ~= "number" or (total ~= nil and type(total) ~= "number") then
            error("LrProgressScope:setPortionComplete: amountDone and totalAmount must be numbers", 2)
        end
        touch(scope)
        scope.portions[#scope.portions + 1] = { done, total }
        scope.fractions[#scope.fractions + 1] = done / (total or 1)
        if world.cancelAtPortion and done >= world.cancelAtPortion and scope.cancelable then
            scope.canceled, scope.canceledByUser = true, true
        end
    end
    Scope.getPortionComplete = function(scope)
        local last = scope.portions[#scope.portions]
        return last and last[1] or 0
    end
    Scope.setCaption = function(scope, caption)
        touch(scope)
        scope.caption = caption
        scope.captions[#scope.captions + 1] = caption
    end
    Scope.setCancelable = function(scope, cancelable) scope.cancelable = cancelable and true or false end
    Scope.isCancelable = function(scope) return scope.cancelable end
    Scope.isCanceled = function(scope) return scope.canceled end
    Scope.cancel = function(scope) scope.canceled = true end
    Scope.done = function(scope) scope.finished = true end
    Scope.isDone = function(scope) return scope.finished end
    Scope.getParentScope = function(scope) return scope.args.parent end
    Scope.attachToFunctionContext = function(scope, context)
        context:addCleanupHandler(function() scope:done() end)
    end
    --- Test helper (not SDK): the last fraction set, 0 before any.
    Scope.fraction = function(scope) return scope.fractions[#scope.fractions] or 0 end
    m.LrProgressScope = setmetatable({}, {
        __call = function(_, args)
            local scope = setmetatable({
                args = args, title = args.title, caption = args.caption, captions = { args.caption },
                portions = {}, fractions = {}, cancelable = false, canceled = false, finished = false,
                touchedAfterDone = 0,
            }, Scope)
            if args.functionContext then
                scope:attachToFunctionContext(args.functionContext)
            end
            world.progressScopes[#world.progressScopes + 1] = scope
            return scope
        end,
    })
    return m
end

-- Catalog and photos -------------------------------------------------------------------------

local Photo = {}
Photo.__index = Photo

local RAW_KEYS = { path = true, pickStatus = true, rating = true, colorNameForLabel = true, uuid = true,
    fileName = true, isVirtualCopy = true, masterPhoto = true, virtualCopies = true, countVirtualCopies = true }
local LABELS = { red = true, yellow = true, green = true, blue = true, purple = true, none = true }
-- The default label set ("Lightroom Default"): the text each colour's label carries.
local LABEL_TEXT = { red = "Red", yellow = "Yellow", green = "Green", blue = "Blue", purple = "Purple", none = "" }

function Photo:getRawMetadata(key)
    if not RAW_KEYS[key] then
        error("LrPhoto:getRawMetadata: unknown key " .. tostring(key), 2)
    end
    if key == "pickStatus" then return self.pick end
    if key == "colorNameForLabel" then return self.label end
    if key == "fileName" then return self.path:match("[^\\/]*$") end
    if key == "isVirtualCopy" then return self.masterPhoto ~= nil end
    if key == "virtualCopies" then
        local copies = {}
        for i, p in ipairs(self.copies) do copies[i] = p end
        return copies
    end
    if key == "countVirtualCopies" then return #self.copies end
    return self[key]
end

local FORMATTED_KEYS = { label = true, fileName = true }

function Photo:getFormattedMetadata(key)
    if not FORMATTED_KEYS[key] then
        error("LrPhoto:getFormattedMetadata: key not supported by this stand-in: " .. tostring(key), 2)
    end
    if key == "fileName" then return self.path:match("[^\\/]*$") end
    if self.labelText ~= nil then return self.labelText end
    return LABEL_TEXT[self.label] or ""
end

function Photo:assertWrite(what)
    if self.world.writeDepth == 0 then
        error(what .. ": must be called inside catalog:withWriteAccessDo", 3)
    end
end

function Photo:setRawMetadata(key, value)
    self:assertWrite("LrPhoto:setRawMetadata")
    if key == "rating" then
        if value ~= nil and (type(value) ~= "number" or value < 1 or value > 5 or value % 1 ~= 0) then
            error("LrPhoto:setRawMetadata: rating must be nil or 1-5, got " .. tostring(value), 2)
        end
        self.rating = value
    elseif key == "pickStatus" then
        if value ~= -1 and value ~= 0 and value ~= 1 then
            error("LrPhoto:setRawMetadata: pickStatus must be -1, 0 or 1, got " .. tostring(value), 2)
        end
        self.pick = value
    elseif key == "colorNameForLabel" then
        if type(value) ~= "string" then
            error("LrPhoto:setRawMetadata: colorNameForLabel takes a string, got " .. type(value), 2)
        end
        if LABELS[value:lower()] or value == "" then
            self.label, self.labelText = value == "" and "none" or value:lower(), nil
        else
            self.label, self.labelText = "none", value -- a label of no colour: shown white
        end
    else
        error("LrPhoto:setRawMetadata: key not supported by this stand-in: " .. tostring(key), 2)
    end
    self.world:recordWrite(self, key, value, false)
end

function Photo:checkField(plugin, field)
    if pluginIdOf(plugin) ~= self.world.plugin.id then
        error("plug-in metadata: wrong plug-in " .. tostring(pluginIdOf(plugin)), 3)
    end
    if not self.world.fields[field] then
        error("plug-in metadata: field " .. tostring(field) .. " is not declared in the metadata provider", 3)
    end
end

function Photo:getPropertyForPlugin(plugin, field)
    self:checkField(plugin, field)
    return self.props[field]
end

function Photo:setPropertyForPlugin(plugin, field, value)
    self:assertWrite("LrPhoto:setPropertyForPlugin")
    self:checkField(plugin, field)
    local dataType = self.world.fields[field].dataType or "string"
    if value ~= nil and dataType == "string" and type(value) ~= "string" then
        error("LrPhoto:setPropertyForPlugin: " .. field .. " takes a string, got " .. type(value), 2)
    end
    self.props[field] = value
    self.world:recordWrite(self, field, value, true)
end

function World:recordWrite(photo, key, value, isPlugin)
    local entry = { photo = photo, key = key, value = value, plugin = isPlugin }
    self.writes[#self.writes + 1] = entry
    local step = self.openStep
    step.writes[#step.writes + 1] = entry
end

local Catalog = {}
Catalog.__index = Catalog

function World:newCatalog()
    return setmetatable({ world = self, photos = {}, byPath = {}, smartCollections = {} }, Catalog)
end

--- Test helper (not SDK): add a photo already in the catalog.
-- spec: path, pick, rating, label (colour name), labelText (a label of no colour: label is "none"), props.
function Catalog:addTestPhoto(spec)
    local photo = setmetatable({
        world = self.world, path = spec.path, pick = spec.pick or 0, rating = spec.rating,
        label = spec.label or "none", labelText = spec.labelText, props = spec.props or {},
        uuid = "uuid-" .. (#self.photos + 1), localIdentifier = #self.photos + 1, copies = {},
    }, Photo)
    self.photos[#self.photos + 1] = photo
    if not spec.masterPhoto then
        self.byPath[spec.path] = photo
    end
    return photo
end

--- Test helper (not SDK): add a virtual copy of master (Photo > Create Virtual Copy): its own flag,
-- rating and label (spec), its master's path.
function Catalog:addTestVirtualCopy(master, spec)
    spec = spec or {}
    spec.path, spec.masterPhoto = master.path, master
    local copy = self:addTestPhoto(spec)
    copy.masterPhoto = master
    master.copies[#master.copies + 1] = copy
    return copy
end

function Catalog:findPhotoByPath(path)
    if type(path) ~= "string" then
        error("LrCatalog:findPhotoByPath: path must be a string", 2)
    end
    local events = self.world.events
    events[#events + 1] = { "find", path }
    return self.byPath[path]
end

function Catalog:getAllPhotos()
    local all = {}
    for i, p in ipairs(self.photos) do all[i] = p end
    return all
end

function Catalog.batchGetRawMetadata(_, photos, keys)
    local result = {}
    for _, p in ipairs(photos) do
        local row = {}
        for _, k in ipairs(keys) do row[k] = p:getRawMetadata(k) end
        result[p] = row
    end
    return result
end

function Catalog:findPhotosWithProperty(pluginId, field)
    if pluginIdOf(pluginId) ~= self.world.plugin.id or not self.world.fields[field] then
        error("LrCatalog:findPhotosWithProperty: unknown plug-in field " .. tostring(field), 2)
    end
    local found = {}
    for _, p in ipairs(self.photos) do
        if p.props[field] ~= nil then found[#found + 1] = p end
    end
    return found
end

function Catalog:withWriteAccessDo(actionName, func, timeoutParams)
    local world = self.world
    if world.writeDepth > 0 then
        error("LrCatalog:withWriteAccessDo: nested write access is not allowed", 2)
    end
    if type(actionName) ~= "string" or type(func) ~= "function" then
        error("LrCatalog:withWriteAccessDo: actionName and func are required", 2)
    end
    world:yieldPoint("LrCatalog:withWriteAccessDo") -- waiting for access is a yield point
    if world.busy then
        if timeoutParams == nil then
            error("LrCatalog:withWriteAccessDo: could not execute action '" .. actionName
                .. "'. It was blocked by another write access call, and no timeout parameters were provided.", 2)
        end
        if timeoutParams.callback then timeoutParams.callback() end
        return "aborted"
    end
    local step = { name = actionName, writes = {} }
    world.events[#world.events + 1] = { "write", actionName }
    world.openStep = step
    world.writeDepth = 1
    local ok, err = pcall(func, {})
    world.writeDepth = 0
    world.openStep = nil
    world.steps[#world.steps + 1] = step
    if not ok then
        error(err, 0)
    end
    if timeoutParams then
        return "executed"
    end
end

function Catalog:createSmartCollection(name, searchDesc, parent, canReturnPrior)
    if self.world.writeDepth == 0 then
        error("LrCatalog:createSmartCollection: must be called inside catalog:withWriteAccessDo", 2)
    end
    local function check(desc)
        if desc.criteria then
            local field = desc.criteria:match("^sdktext:(.+)$")
            if field then
                local pluginId, id = field:match("^(.*)%.([^.]+)$")
                local declared = self.world.fields[id]
                if pluginId ~= self.world.plugin.id or not declared or not declared.searchable then
                    error("createSmartCollection: " .. desc.criteria .. " is not a searchable field of this plug-in", 3)
                end
            end
            return
        end
        for _, sub in ipairs(desc) do check(sub) end
    end
    check(searchDesc)
    local existing = self.smartCollections[name]
    if existing then
        return canReturnPrior and existing or nil
    end
    local collection = { name = name, searchDesc = searchDesc, parent = parent }
    self.smartCollections[name] = collection
    self.world:recordWrite(collection, "smartCollection", name, false)
    return collection
end

-- Assertion helpers -------------------------------------------------------------------------

--- The steps whose name is actionName.
function World:stepsNamed(actionName)
    local found = {}
    for _, s in ipairs(self.steps) do
        if s.name == actionName then found[#found + 1] = s end
    end
    return found
end

--- The property table bound in a dialog's contents (to simulate the user editing fields).
function sdk.dialogProps(args)
    return args.contents.args.bind_to_object
end

return sdk
