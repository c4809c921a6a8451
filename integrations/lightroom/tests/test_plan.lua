-- Path remapping and the plan (pure logic, no SDK).
local T = ...
local CullPaths = require "CullPaths"
local CullPlan = require "CullPlan"
local CullReport = require "CullReport"

local function remap(path, from, to, ignoreCase)
    return CullPaths.remap(path, CullPaths.rule { remapFrom = from, remapTo = to, ignoreCase = ignoreCase })
end

T.test("paths: POSIX prefix remap, trailing separators, no partial-name match", function()
    T.eq(remap("/mnt/nas/photos/2024/a.jpg", "/mnt/nas/photos", "/Volumes/photos"), "/Volumes/photos/2024/a.jpg", "plain")
    T.eq(remap("/mnt/nas/photos/a.jpg", "/mnt/nas/photos/", "/Volumes/photos/"), "/Volumes/photos/a.jpg", "trailing /")
    local p, hit = remap("/mnt/nas/photos2/a.jpg", "/mnt/nas/photos", "/V")
    T.eq(p, "/mnt/nas/photos2/a.jpg", "photos2 is not under photos"); T.eq(hit, false, "no hit")
    T.eq(remap("/mnt/x/a.jpg", "/", "/Volumes/disk/"), "/Volumes/disk/mnt/x/a.jpg", "root prefix")
    T.eq(remap("/a.jpg", "", "/x"), "/a.jpg", "no rule")
end)

T.test("paths: Windows to Mac and Mac to Windows convert separators", function()
    T.eq(remap("C:\\Users\\ann\\Pictures\\2024\\a.jpg", "C:\\Users\\ann\\Pictures", "/Volumes/Pictures"),
        "/Volumes/Pictures/2024/a.jpg", "win -> mac")
    T.eq(remap("/home/ann/Pictures/2024/a.jpg", "/home/ann/Pictures", "D:\\Pictures"),
        "D:\\Pictures\\2024\\a.jpg", "linux -> win")
    T.eq(remap("\\\\nas\\share\\x\\a.jpg", "\\\\nas\\share", "/Volumes/share"), "/Volumes/share/x/a.jpg", "UNC")
    T.eq(remap("C:/Users/ann/a.jpg", "C:\\Users\\ann", "E:\\ann"), "E:\\ann\\a.jpg", "mixed separators")
end)

T.test("paths: a drive root keeps its backslash, as the remap target and as the prefix", function()
    T.eq(remap("/mnt/c/Users/ann/a.jpg", "/mnt/c", "D:\\"), "D:\\Users\\ann\\a.jpg", "to D:\\")
    T.eq(remap("/mnt/c/Users/ann/a.jpg", "/mnt/c/", "D:/"), "D:\\Users\\ann\\a.jpg", "to D:/")
    T.eq(remap("/mnt/c/a.jpg", "/mnt/c", "d:"), "d:\\a.jpg", "to a bare drive letter")
    T.eq(remap("/mnt/c", "/mnt/c", "D:\\"), "D:\\", "the root itself")
    T.eq(remap("C:\\Users\\a.jpg", "C:\\", "/Volumes/C"), "/Volumes/C/Users/a.jpg", "from C:\\")
    T.eq(remap("C:\\Users\\a.jpg", "C:\\", "E:\\"), "E:\\Users\\a.jpg", "drive to drive")
    T.eq(remap("c:/Users/a.jpg", "C:", "/V", true), "/V/Users/a.jpg", "from a bare drive letter, ignoring case")
end)

T.test("paths: case-insensitive prefix only when asked", function()
    local p, hit = remap("C:\\USERS\\Ann\\a.JPG", "c:\\users\\ann", "/V")
    T.eq(hit, false, "case-sensitive by default"); T.eq(p, "C:\\USERS\\Ann\\a.JPG", "unchanged")
    T.eq(remap("C:\\USERS\\Ann\\a.JPG", "c:\\users\\ann", "/V", true), "/V/a.JPG", "ignoreCase keeps the rest's case")
end)

local function row(absPath, verdict, extra)
    local r = { absPath = absPath, path = absPath, verdict = verdict }
    for k, v in pairs(extra or {}) do r[k] = v end
    return r
end

local function fakeCatalog(specs)
    local photos, byPath = {}, {}
    for i, s in ipairs(specs) do
        local p = { localIdentifier = i, path = s.path, state = { pick = s.pick or 0, rating = s.rating,
            label = s.label or "none", labelText = s.labelText, receipt = s.receipt or {}, copies = s.copies } }
        photos[i] = p
        byPath[s.path] = p
    end
    return function(path) return byPath[path] end, function(photo) return photo.state end, photos
end

T.test("plan: reject flags, uncertain labels, keep does nothing, hand-set never changed", function()
    local lookup, read = fakeCatalog {
        { path = "/p/blur.jpg" }, { path = "/p/soft.jpg" }, { path = "/p/sharp.jpg" },
        { path = "/p/picked.jpg", pick = 1 }, { path = "/p/rated.jpg", rating = 2 },
        { path = "/p/red.jpg", label = "red" }, { path = "/p/rejected.jpg", pick = -1 },
        { path = "/p/softrated.jpg", rating = 1 },
    }
    local report = { rows = {
        row("/p/blur.jpg", "reject"), row("/p/soft.jpg", "uncertain"), row("/p/sharp.jpg", "keep"),
        row("/p/picked.jpg", "reject"), row("/p/rated.jpg", "reject"), row("/p/red.jpg", "uncertain"),
        row("/p/rejected.jpg", "reject"), row("/p/softrated.jpg", "uncertain"), row("/p/missing.jpg", "reject"),
        row("/p/err.jpg", nil, { error = "truncated" }), row(nil, "reject", { path = "rel.jpg", unmatchable = "relative" }),
    }, problems = { "line 99: x" } }
    local plan = CullPlan.build(report, {}, lookup, read)
    local c = plan.counts
    T.eq(c.rows, 11, "rows"); T.eq(c.matched, 8, "matched"); T.eq(c.notFound, 1, "not found")
    T.eq(c.toReject, 1, "to reject"); T.eq(c.toLabel, 1, "to label"); T.eq(c.handSet, 5, "hand-set")
    T.eq(c.keep, 1, "keep"); T.eq(c.noVerdict, 1, "error row"); T.eq(c.unmatchable, 1, "unmatchable")
    T.eq(c.unreadable, 1, "unreadable lines")
    T.eq(#plan.actions, 2, "actions")
    T.eq(plan.actions[1].ops.setPick, -1, "reject op"); T.eq(plan.actions[2].ops.setLabel, "yellow", "label op")
    T.eq(plan.notFoundExamples[1], "/p/missing.jpg", "example")
    local text = table.concat(CullPlan.summary(plan, {}), "\n")
    T.contains(text, "11 photos in the report; 8 matched in this catalog, 1 not in the catalog", "summary counts")
    T.contains(text, "never changed: 5", "hand-set count")
end)

T.test("plan: a reject the report marks protected is never flagged, and an earlier flag of ours is cleared", function()
    local lookup, read = fakeCatalog {
        { path = "/p/rated_in_darktable.jpg" },
        { path = "/p/flagged_before.jpg", pick = -1, receipt = { verdict = "reject", setPick = "-1" } },
        { path = "/p/plain.jpg" },
    }
    local report = { rows = {
        row("/p/rated_in_darktable.jpg", "reject", { protected = "user rated it 4 stars" }),
        row("/p/flagged_before.jpg", "reject", { protected = "user took back cull's reject (xmp:Rating)" }),
        row("/p/plain.jpg", "reject"),
    } }
    local plan = CullPlan.build(report, {}, lookup, read)
    T.eq(plan.counts.protected, 2, "protected count"); T.eq(plan.counts.toReject, 1, "only the plain reject")
    T.eq(plan.counts.toClear, 1, "the earlier flag of ours comes off")
    T.eq(#plan.actions, 2, "actions")
    T.eq(plan.actions[1].verdict, "keep", "the write re-checks with keep, not reject")
    T.eq(plan.actions[2].verdict, "reject", "a plain reject stays reject")
    T.contains(table.concat(CullPlan.summary(plan, {}), "\n"), "kept by you elsewhere, never flagged: 2", "summary")
end)

T.test("report: the protected field is read from JSON Lines", function()
    local report = CullReport.parse('{"report_version": 1, "path": "/a.jpg", "abs_path": "/a.jpg", "verdict": "reject", '
        .. '"protected": "user picked it (flagged)"}\n', "r.jsonl")
    T.eq(report.rows[1].protected, "user picked it (flagged)", "protected")
    local csv = CullReport.parse("path,abs_path,verdict,report_version,protected\n"
        .. "/a.jpg,/a.jpg,reject,1,user rated it 3 stars\n/b.jpg,/b.jpg,reject,1,\n", "r.csv")
    T.eq(csv.rows[1].protected, "user rated it 3 stars", "CSV: protected")
    T.eq(csv.rows[2].protected, nil, "CSV: an empty cell is no protection")
end)

T.test("plan: configurable label, labelling off, grey/empty mean no label", function()
    local lookup, read = fakeCatalog { { path = "/a" }, { path = "/b", label = "grey" }, { path = "/c", label = "" } }
    local report = { rows = { row("/a", "uncertain"), row("/b", "uncertain"), row("/c", "uncertain") } }
    local plan = CullPlan.build(report, { uncertainLabel = "Purple" }, lookup, read)
    T.eq(plan.counts.toLabel, 3, "all three labelled"); T.eq(plan.actions[1].ops.setLabel, "purple", "purple")
    local off = CullPlan.build(report, { uncertainLabel = "none" }, lookup, read)
    T.eq(#off.actions, 0, "no label when off"); T.eq(off.counts.keep, 3, "counted as nothing to do")
end)

T.test("plan: RAW+JPEG shot matches through the partner, one photo once", function()
    local lookup, read = fakeCatalog { { path = "/p/IMG_1.CR3" }, { path = "/p/IMG_2.JPG" }, { path = "/p/IMG_2.CR3" } }
    local report = { rows = {
        row("/p/IMG_1.JPG", "reject", { partnerAbs = "/p/IMG_1.CR3" }), -- LrC stacked JPEG as sidecar of the RAW
        row("/p/IMG_2.JPG", "reject", { partnerAbs = "/p/IMG_2.CR3" }), -- imported as two photos: both flagged
        row("/p/IMG_2.JPG", "reject"),                                   -- listed twice: counted once
    } }
    local plan = CullPlan.build(report, {}, lookup, read)
    T.eq(plan.counts.viaPartner, 1, "via partner"); T.eq(plan.counts.toReject, 3, "three photos flagged")
    T.eq(plan.counts.duplicates, 1, "duplicate"); T.eq(#plan.actions, 3, "actions")
end)

T.test("plan: remap applies to every row; zero-match help names the path tried", function()
    local lookup, read = fakeCatalog { { path = "/Volumes/nas/a.jpg" } }
    local report = { rows = { row("/mnt/nas/a.jpg", "reject"), row("/mnt/nas/b.jpg", "reject") } }
    local none = CullPlan.build(report, {}, lookup, read)
    T.eq(none.counts.matched, 0, "nothing without remap")
    local help = CullPlan.zeroMatchHelp(none, {})
    T.contains(help, "None of the photos", "headline"); T.contains(help, "/mnt/nas/a.jpg", "example path")
    T.contains(help, "Report path prefix", "names the setting")
    local plan = CullPlan.build(report, { remapFrom = "/mnt/nas", remapTo = "/Volumes/nas" }, lookup, read)
    T.eq(plan.counts.matched, 1, "matched after remap"); T.eq(plan.remapped, 2, "both rows remapped")
    local wrong = CullPlan.build(report, { remapFrom = "/srv", remapTo = "/Volumes/nas" }, lookup, read)
    T.contains(CullPlan.zeroMatchHelp(wrong, {}), "\"/srv\" matched no path", "prefix that matches nothing")
    local win = CullPlan.build({ rows = { row("C:\\P\\a.jpg", "reject") } }, {}, lookup, read)
    T.contains(CullPlan.zeroMatchHelp(win, {}), "Ignore case", "Windows hint")
end)

T.test("plan: re-apply is idempotent; a changed verdict clears only what cull set", function()
    local ours = { verdict = "reject", setPick = "-1" }
    local s = { pick = -1, label = "none", receipt = ours }
    T.eq(CullPlan.evaluate("reject", s, {}).status, "already", "same verdict again")
    local toKeep = CullPlan.evaluate("keep", s, {})
    T.eq(toKeep.status, "apply", "keep now"); T.ok(toKeep.ops.clearPick, "clears our flag")
    T.eq(toKeep.receipt.verdict, nil, "receipt cleared")
    local toUnsure = CullPlan.evaluate("uncertain", s, {})
    T.ok(toUnsure.ops.clearPick and toUnsure.ops.setLabel == "yellow", "flag -> label")
    local relabel = CullPlan.evaluate("uncertain", { pick = 0, label = "yellow",
        receipt = { verdict = "uncertain", setLabel = "yellow" } }, { uncertainLabel = "blue" })
    T.eq(relabel.ops.setLabel, "blue", "our label follows the setting")
    local userPicked = CullPlan.evaluate("keep", { pick = 1, label = "none", receipt = ours }, {})
    T.eq(userPicked.status, "handSet", "user picked after we rejected: left alone")
    T.eq(next(userPicked.ops), nil, "no ops")
    local userLabel = CullPlan.evaluate("reject", { pick = 0, label = "green",
        receipt = { verdict = "uncertain", setLabel = "yellow" } }, {})
    T.eq(userLabel.status, "handSet", "user relabelled: left alone")
end)

T.test("plan: a flag or label cull set and the user took back is the user's choice", function()
    local unflagged = CullPlan.evaluate("reject", { pick = 0, label = "none",
        receipt = { verdict = "reject", setPick = "-1" } }, {})
    T.eq(unflagged.status, "handSet", "not flagged again"); T.eq(unflagged.reasons[1], "unflagged", "reason")
    T.eq(next(unflagged.ops), nil, "no ops")
    local unlabelled = CullPlan.evaluate("uncertain", { pick = 0, label = "none",
        receipt = { verdict = "uncertain", setLabel = "yellow" } }, {})
    T.eq(unlabelled.status, "handSet", "not labelled again"); T.eq(unlabelled.reasons[1], "label removed", "reason")
    T.eq(CullPlan.evaluate("keep", { pick = 0, label = "none", receipt = { verdict = "reject", setPick = "-1" } }, {})
        .status, "handSet", "a newer verdict leaves it alone too")
    local relabelled = CullPlan.evaluate("uncertain", { pick = 0, label = "none", labelText = "Review",
        receipt = { verdict = "uncertain", setLabel = "yellow" } }, {})
    T.eq(relabelled.reasons[1], "labelled", "cull's yellow replaced by a label of no colour")
end)

T.test("plan: a label whose text matches no colour of the active set counts as a label", function()
    local custom = { pick = 0, label = "none", labelText = "Review", receipt = {} }
    T.ok(CullPlan.labelled(custom), "labelled")
    T.eq(CullPlan.evaluate("uncertain", custom, {}).status, "handSet", "not replaced by yellow")
    T.eq(CullPlan.evaluate("reject", custom, {}).status, "handSet", "not flagged")
    T.eq(CullPlan.evaluate("keep", custom, {}).status, "keep", "keep: nothing to do")
    for _, text in ipairs({ "", " ", false }) do -- false: getFormattedMetadata gave nil
        local none = { pick = 0, label = "none", labelText = text or nil, receipt = {} }
        T.ok(not CullPlan.labelled(none), "no label: " .. tostring(text))
        T.eq(CullPlan.evaluate("uncertain", none, {}).ops.setLabel, "yellow", "labelled yellow")
    end
    local ours = { pick = 0, label = "yellow", labelText = "Yellow", receipt = { verdict = "uncertain", setLabel = "yellow" } }
    T.eq(CullPlan.evaluate("uncertain", ours, {}).status, "already", "cull's own yellow is not the user's")
end)

local function copyState(spec)
    return { pick = spec.pick or 0, rating = spec.rating, label = spec.label or "none", labelText = spec.labelText,
        receipt = spec.receipt or {} }
end

T.test("plan: a virtual copy flagged, rated or labelled by hand keeps its master as it is", function()
    local function master(copies, extra)
        local state = { pick = 0, label = "none", receipt = {}, copies = {} }
        for i, spec in ipairs(copies) do state.copies[i] = copyState(spec) end
        for k, v in pairs(extra or {}) do state[k] = v end
        return state
    end
    for _, case in ipairs({
        { { pick = 1 }, "a virtual copy is picked" }, { { pick = -1 }, "a virtual copy is rejected" },
        { { rating = 1 }, "a virtual copy is rated" }, { { label = "red" }, "a virtual copy is labelled" },
        { { labelText = "Review" }, "a virtual copy is labelled" }, -- a label of no colour of the active set
    }) do
        for _, verdict in ipairs({ "reject", "uncertain" }) do
            local d = CullPlan.evaluate(verdict, master({ {}, case[1] }), {})
            T.eq(d.status, "handSet", case[2] .. ": " .. verdict); T.eq(d.reasons[1], case[2], "reason")
            T.eq(next(d.ops), nil, "no ops"); T.eq(d.receipt, nil, "no receipt"); T.ok(d.viaCopy, "via a copy")
        end
    end
    local two = CullPlan.evaluate("reject", master({ { rating = 2 }, { rating = 5, label = "green" } }), {})
    T.eq(table.concat(two.reasons, "; "), "a virtual copy is rated; a virtual copy is labelled", "each reason once")
    local both = CullPlan.evaluate("reject", master({ { pick = 1 } }, { rating = 3 }), {})
    T.eq(table.concat(both.reasons, "; "), "rated; a virtual copy is picked", "the master's own reason first")
    -- not by hand: an unmarked copy, or what cull itself recorded on a copy
    local plain = CullPlan.evaluate("reject", master({ {}, { labelText = "" } }), {})
    T.eq(plain.status, "apply", "unmarked copies"); T.eq(plain.ops.setPick, -1, "the master is flagged")
    T.eq(plain.viaCopy, nil, "no copy reason")
    local ours = CullPlan.evaluate("reject", master({
        { pick = -1, receipt = { verdict = "reject", setPick = "-1" } },
        { label = "yellow", receipt = { verdict = "uncertain", setLabel = "yellow" } },
    }), {})
    T.eq(ours.status, "apply", "values cull recorded on a copy are not the user's")
    T.eq(CullPlan.evaluate("keep", master({ { rating = 4 } }), {}).status, "keep", "keep: nothing to do anyway")
    T.eq(#CullPlan.copyReasons(nil), 0, "a photo without copies")
end)

T.test("plan: a master cull flagged or labelled before its virtual copy was marked loses only cull's values",
    function()
    local function master(copy, extra)
        local state = { pick = 0, label = "none", receipt = {}, copies = { copyState {}, copyState(copy) } }
        for k, v in pairs(extra or {}) do state[k] = v end
        return state
    end
    local flagged = { pick = -1, receipt = { verdict = "reject", setPick = "-1" } }
    for _, verdict in ipairs({ "reject", "uncertain", "keep" }) do
        local d = CullPlan.evaluate(verdict, master({ rating = 3 }, flagged), {})
        T.eq(d.status, "apply", "cull's flag comes off: " .. verdict); T.ok(d.viaCopy, "via a copy")
        T.ok(d.ops.clearPick, "clearPick"); T.eq(d.ops.setPick, nil, "never flagged")
        T.eq(d.ops.setLabel, nil, "never labelled"); T.eq(d.ops.clearLabel, nil, "no label of cull's")
        T.eq(d.receipt.verdict, nil, "receipt cleared"); T.eq(d.receipt.setPick, nil, "no setPick left")
        T.eq(d.reasons[1], "a virtual copy is rated", "reason")
    end
    local labelled = CullPlan.evaluate("uncertain", master({ pick = 1 },
        { label = "yellow", receipt = { verdict = "uncertain", setLabel = "yellow" } }), {})
    T.ok(labelled.ops.clearLabel and not labelled.ops.clearPick, "cull's label comes off")
    T.eq(labelled.receipt.setLabel, nil, "receipt cleared")
    -- what the user set on the master stays: only cull's flag comes off a master the user also rated
    local rated = CullPlan.evaluate("reject", master({ label = "red" }, { pick = -1, rating = 2,
        receipt = { verdict = "reject", setPick = "-1" } }), {})
    T.ok(rated.ops.clearPick, "cull's flag off"); T.eq(table.concat(rated.reasons, "; "),
        "rated; a virtual copy is labelled", "reasons")
    local green = CullPlan.evaluate("reject", master({ rating = 1 }, { pick = -1, label = "green",
        receipt = { verdict = "reject", setPick = "-1" } }), {})
    T.ok(green.ops.clearPick and not green.ops.clearLabel, "the user's green label stays")
    -- no value of cull's left: left alone as before
    local taken = CullPlan.evaluate("reject", master({ rating = 1 }, { receipt = { verdict = "reject", setPick = "-1" } }),
        {})
    T.eq(taken.status, "handSet", "cull's flag taken back by hand: nothing to clear"); T.eq(next(taken.ops), nil, "no ops")
    local userFlag = CullPlan.evaluate("keep", master({ rating = 1 }, { pick = -1 }), {})
    T.eq(userFlag.status, "keep", "a Rejected flag the user set stays")
    -- after the write: nothing of cull's left, so re-applying changes nothing, and undo has no receipt to read
    local after = master({ rating = 3 }, { receipt = {} })
    local again = CullPlan.evaluate("reject", after, {})
    T.eq(again.status, "handSet", "re-apply: left alone"); T.eq(next(again.ops), nil, "no ops")
    T.eq(again.receipt, nil, "no receipt written")
    local undo = CullPlan.undoDecision(after)
    T.ok(not undo.ops.clearPick and not undo.ops.clearLabel and not undo.changedSince, "undo: nothing to clear")
end)

T.test("plan: masters kept through a virtual copy count as hand-set; the preview says why", function()
    local lookup, read = fakeCatalog {
        { path = "/p/rated_copy.jpg", copies = { copyState { rating = 3 } } },
        { path = "/p/plain_copy.jpg", copies = { copyState {} } },
        { path = "/p/applied.jpg", pick = -1, receipt = { verdict = "reject", setPick = "-1" },
            copies = { copyState { pick = 1 } } }, -- cull flagged it before the copy was picked
        { path = "/p/labelled_copy.jpg", copies = { copyState { label = "blue" } } },
    }
    local plan = CullPlan.build({ rows = {
        row("/p/rated_copy.jpg", "reject"), row("/p/plain_copy.jpg", "reject"), row("/p/applied.jpg", "reject"),
        row("/p/labelled_copy.jpg", "uncertain"),
    } }, {}, lookup, read)
    local c = plan.counts
    T.eq(c.toReject, 1, "only the master with an unmarked copy"); T.eq(c.toLabel, 0, "no label")
    T.eq(c.handSet, 2, "hand-set"); T.eq(c.handSetViaCopy, 2, "through a copy")
    T.eq(c.clearedViaCopy, 1, "cull's earlier flag comes off"); T.eq(c.toClear, 0, "not counted as a changed verdict")
    T.eq(#plan.actions, 2, "two actions"); T.eq(plan.actions[1].row.absPath, "/p/plain_copy.jpg", "the flag")
    T.eq(plan.actions[2].row.absPath, "/p/applied.jpg", "the flag that comes off")
    T.ok(plan.actions[2].ops.clearPick and not plan.actions[2].ops.setPick, "only cleared")
    T.eq(plan.handSet[1].reasons[1], "a virtual copy is rated", "reason kept for the record")
    local text = table.concat(CullPlan.summary(plan, {}), "\n")
    T.contains(text, "never changed: 2", "counted as hand-set")
    T.contains(text, "a virtual copy is flagged/rated/labelled by hand: 2", "why")
    T.contains(text, "Will take cull's earlier flag or label off 1 master photo whose virtual copy", "count")
    T.ok(not text:find("Verdict changed", 1, true), "not a changed verdict")
    local quiet = table.concat(CullPlan.summary(CullPlan.build({ rows = { row("/p/plain_copy.jpg", "reject") } }, {},
        lookup, read), {}), "\n")
    T.ok(not quiet:find("virtual copy", 1, true), "no copy lines when no copy is marked")
end)

T.test("plan: undo decisions clear only values still as cull set them", function()
    local d = CullPlan.undoDecision { pick = -1, label = "yellow", receipt = { setPick = "-1", setLabel = "yellow" } }
    T.ok(d.ops.clearPick and d.ops.clearLabel and d.ops.clearReceipt, "both cleared")
    local changed = CullPlan.undoDecision { pick = 1, label = "red", receipt = { setPick = "-1", setLabel = "yellow" } }
    T.ok(not changed.ops.clearPick and not changed.ops.clearLabel, "user values stay")
    T.ok(changed.changedSince and changed.ops.clearReceipt, "receipt still cleared")
end)

T.test("plan: rows from a real-looking CSV report flow into the plan", function()
    local text = "report_version,path,abs_path,verdict,score,kind,partner,partner_abs,size,mtime,error\n"
        .. "1,a.jpg,/p/a.jpg,reject,0.02,motion,,,1,1,\n1,b.jpg,/p/b.jpg,uncertain,0.4,defocus,,,1,1,\n"
    local report = assert(CullReport.parse(text, "r.csv"))
    local lookup, read = fakeCatalog { { path = "/p/a.jpg" }, { path = "/p/b.jpg" } }
    local plan = CullPlan.build(report, {}, lookup, read)
    T.eq(plan.counts.toReject, 1, "reject"); T.eq(plan.counts.toLabel, 1, "label")
end)

T.test("plan: the build ticks per TICK_ROWS rows with a rising fraction; a tick returning true stops it", function()
    local specs, rows = {}, {}
    for i = 1, 1200 do
        local path = string.format("/p/%04d.jpg", i)
        specs[i] = { path = path }
        rows[i] = row(path, "reject")
    end
    local lookup, read = fakeCatalog(specs)
    local seen = {}
    local plan = CullPlan.build({ rows = rows }, {}, lookup, read, function(done, fraction)
        seen[#seen + 1] = { done, fraction }
    end)
    T.eq(#plan.actions, 1200, "whole plan")
    T.eq(#seen, 2, "ticks"); T.eq(seen[1][1], CullPlan.TICK_ROWS, "rows done"); T.eq(seen[2][2], 1000 / 1200, "fraction")
    local looked = 0
    local stopped = CullPlan.build({ rows = rows }, {}, function(path)
        looked = looked + 1
        return lookup(path)
    end, read, function(done) return done >= CullPlan.TICK_ROWS end)
    T.eq(stopped, nil, "no plan after a stop"); T.eq(looked, CullPlan.TICK_ROWS, "no look-up after it")
end)
