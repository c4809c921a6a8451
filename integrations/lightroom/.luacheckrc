-- luacheck configuration for the cull Lightroom plug-in and its test harness (Lua 5.1, as LrC runs it).
std = "lua51"
max_line_length = 120
files["cull.lrplugin"] = { read_globals = { "import", "_PLUGIN", "LOC" } }
files["tests"] = { globals = { "import", "_PLUGIN" }, max_line_length = 140 }
