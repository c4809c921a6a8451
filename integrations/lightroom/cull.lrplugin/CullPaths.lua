--[[ CullPaths: map a path as cull saw it to the path Lightroom Classic knows.

The machine that ran cull may see the photos under another prefix (a NAS mounted at
/mnt/photos there, /Volumes/photos here) or on another OS (C:\Photos vs /Volumes/Photos).
One rule: a prefix `from` becomes `to`; the rest of the path takes the separators of `to`.
With ignoreCase, the prefix and the catalog lookup ignore ASCII case (Windows-style paths).
No SDK use.
]]

local CullPaths = {}

--- True for C:\..., C:/... or \\server\share paths.
function CullPaths.isWindowsStyle(p)
    return type(p) == "string" and (p:match("^%a:[\\/]") ~= nil or p:sub(1, 2) == "\\\\")
end

--- The path with every separator as '/', for comparisons.
function CullPaths.slashes(p)
    return (p:gsub("\\", "/"))
end

--- Comparison key for a path: '/' separators, no trailing separator, lower case when ignoreCase.
function CullPaths.key(p, ignoreCase)
    local k = CullPaths.slashes(p)
    if #k > 1 then
        k = k:gsub("/+$", "")
    end
    if ignoreCase then
        k = k:lower()
    end
    return k
end

local function trimTrailing(p)
    local t = p:gsub("[\\/]+$", "")
    if t == "" then
        return p:sub(1, 1) -- "/" stays "/"
    end
    if t:match("^%a:$") then
        return t .. "\\" -- a drive root ("D:\\", "D:/" or "D:") stays a Windows drive root
    end
    return t
end

--- Settings table -> rule, or nil when no remap is configured.
function CullPaths.rule(settings)
    settings = settings or {}
    local from = settings.remapFrom and settings.remapFrom:match("^%s*(.-)%s*$") or ""
    local to = settings.remapTo and settings.remapTo:match("^%s*(.-)%s*$") or ""
    if from == "" then
        return nil
    end
    return { from = trimTrailing(from), to = trimTrailing(to), ignoreCase = settings.ignoreCase and true or false }
end

--- Apply the rule to path. Returns the mapped path and whether the prefix matched.
function CullPaths.remap(path, rule)
    if rule == nil or path == nil then
        return path, false
    end
    local fromKey = CullPaths.key(rule.from, rule.ignoreCase)
    local pathKey = CullPaths.slashes(path)
    if rule.ignoreCase then
        pathKey = pathKey:lower()
    end
    local rest
    if pathKey == fromKey then
        rest = ""
    elseif fromKey == "/" and pathKey:sub(1, 1) == "/" then
        rest = path:sub(2)
    elseif pathKey:sub(1, #fromKey + 1) == fromKey .. "/" then
        rest = path:sub(#fromKey + 2)
    else
        return path, false
    end
    local sep = CullPaths.isWindowsStyle(rule.to) and "\\" or "/"
    rest = rest:gsub("[\\/]", sep)
    if rest == "" then
        return rule.to, true
    end
    if rule.to == "" then
        return rest, true
    end
    if rule.to:sub(-1) == sep then
        return rule.to .. rest, true
    end
    return rule.to .. sep .. rest, true
end

return CullPaths
