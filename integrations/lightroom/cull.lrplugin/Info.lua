--[[ cull for Lightroom Classic: turn cull's verdicts into Rejected flags and colour labels.
Install: File > Plug-in Manager > Add, choose this cull.lrplugin folder.
Use: Library > Plug-in Extras > Apply cull verdicts… (pick the file `cull scan --report` wrote).
]]

return {
    LrSdkVersion = 6.0,
    LrSdkMinimumVersion = 6.0,
    LrToolkitIdentifier = "org.cull.lightroom",
    LrPluginName = "cull verdicts",
    LrMetadataProvider = "CullMetadata.lua",
    LrLibraryMenuItems = {
        { title = "Apply cull verdicts…", file = "ApplyMenu.lua" },
        { title = "Undo cull verdicts…", file = "UndoMenu.lua" },
    },
    VERSION = { major = 1, minor = 0, revision = 0 },
}
