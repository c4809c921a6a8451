--[[ Plug-in metadata (the receipt): what this plug-in set on each photo, so "Undo cull verdicts"
clears exactly that. verdict/score/kind show in the Metadata panel (read-only); verdict is
searchable, which the "cull: Rejects" / "cull: Uncertain" smart collections use.
setPick / setLabel have no title: hidden bookkeeping.
]]

return {
    metadataFieldsForPhotos = {
        { id = "verdict", title = "cull verdict", dataType = "string", readOnly = true,
          searchable = true, browsable = true },
        { id = "score", title = "cull score", dataType = "string", readOnly = true },
        { id = "kind", title = "cull blur kind", dataType = "string", readOnly = true },
        { id = "setPick", dataType = "string" },
        { id = "setLabel", dataType = "string" },
    },
    schemaVersion = 1,
}
