import Foundation

/// The decisions of the restore drill, as pure functions: which files to restore, what a restored file
/// proves, whether the snapshot covers what it must, and the one-line account of it all.
/// `DrillJob` does the I/O around them.

/// A regular file of the snapshot, as `restic ls --json` records it.
public struct DrillCandidate: Sendable, Equatable {
    public var path: String
    public var size: Int64
    public var modified: FileTime

    public init(path: String, size: Int64, modified: FileTime) {
        self.path = path
        self.size = size
        self.modified = modified
    }
}

public enum DrillSelection {
    /// The fractional part of the golden ratio: consecutive multiples of it, taken modulo 1, spread
    /// evenly over [0, 1) however many are taken (the three-gap theorem), and so do the multiples of
    /// any whole step — whether the drill runs daily, weekly or at odd times.
    static let golden = 0.618_033_988_749_894_9

    /// Chooses `count` files of `files`:
    /// - a quarter of them (rounded down) are the most recently modified files: new and changed data
    ///   is what a broken backup loses first;
    /// - the rest are spread over the backed-up paths (`roots`) and their top-level entries (the
    ///   directories mounted under /backup, say), round-robin, so one large directory cannot crowd out
    ///   the others;
    /// - within each such group the files are in a fixed pseudo-random order (a hash of the path, the
    ///   same every run) and each run takes a window of it that starts at frac(day × golden ratio) of
    ///   the way through, the day being the date's UTC day number. The windows of successive runs fall
    ///   evenly over the order, so over weeks every file gets its turn; the same date always chooses
    ///   the same files (a failed drill can be repeated as it was).
    /// The result is in path order.
    public static func choose(_ files: [DrillCandidate], roots: [String], date: Date, count: Int) -> [DrillCandidate] {
        guard count > 0, !files.isEmpty else { return [] }
        if files.count <= count { return files.sorted { $0.path < $1.path } }
        let day = Int64((date.timeIntervalSince1970 / 86_400).rounded(.down))
        let position = (Double(day) * golden).truncatingRemainder(dividingBy: 1)
        let start = position < 0 ? position + 1 : position
        var chosen: [DrillCandidate] = []
        var taken = Set<String>()

        let recent = files.sorted { ($0.modified, $0.path) > ($1.modified, $1.path) }
        for file in recent.prefix(count / 4) where taken.insert(file.path).inserted {
            chosen.append(file)
        }

        var groups: [String: [DrillCandidate]] = [:]
        for file in files { groups[groupKey(for: file.path, roots: roots), default: []].append(file) }
        let keys = groups.keys.sorted()
        let ordered = keys.map { key in
            groups[key]!.sorted { (fnv1a($0.path), $0.path) < (fnv1a($1.path), $1.path) }
        }
        // With more groups than free slots, which groups come first rotates too.
        let firstGroup = Int(start * Double(keys.count)) % keys.count
        var cursors = ordered.map { Int(start * Double($0.count)) % $0.count }
        var remaining = ordered.map(\.count)
        while chosen.count < count, remaining.contains(where: { $0 > 0 }) {
            for step in 0..<keys.count where chosen.count < count {
                let group = (firstGroup + step) % keys.count
                while remaining[group] > 0 {
                    let file = ordered[group][cursors[group]]
                    cursors[group] = (cursors[group] + 1) % ordered[group].count
                    remaining[group] -= 1
                    if taken.insert(file.path).inserted {
                        chosen.append(file)
                        break
                    }
                }
            }
        }
        return chosen.sorted { $0.path < $1.path }
    }

    /// The backed-up path holding `path` (the longest that does) and the first name below it:
    /// `/backup/dir1` for `/backup/dir1/a/b` under the root `/backup`; the root itself for a file
    /// directly in it. A path under no root (restic 0.14 stores relative backup paths as given) is
    /// grouped by its first two components.
    static func groupKey(for path: String, roots: [String]) -> String {
        let root = roots.filter { isSameOrBelow(path, $0) }.max { $0.count < $1.count }
        let base = root ?? ""
        let prefix = base.hasSuffix("/") ? base : base + "/"
        guard path.hasPrefix(prefix) else { return root ?? path }
        let below = path.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: true)
        if root == nil {
            return "/" + below.prefix(2).joined(separator: "/")
        }
        return below.count > 1 ? prefix + below[0] : base
    }

    /// 64-bit FNV-1a of the path's UTF-8: stable across runs, processes and machines, unlike Swift's
    /// `Hasher`, which is seeded anew in every process.
    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}

/// `path` is `ancestor` or lies below it.
func isSameOrBelow(_ path: String, _ ancestor: String) -> Bool {
    if ancestor == "/" { return path.hasPrefix("/") }
    return path == ancestor || path.hasPrefix(ancestor + "/")
}

/// The live file at a snapshot path, as the drill finds it.
public enum LiveFile: Sendable, Equatable {
    case missing
    /// Something else than a regular file now (a directory, a symbolic link, …).
    case notRegular
    case regular(size: Int64, modified: FileTime)
    case unreadable(String)
}

/// Why a restored file was not compared with the live one. Not a failure: the file was restored and
/// restic verified it against the snapshot; the live copy is simply no longer what was saved.
public enum DrillSkip: String, Sendable, Equatable {
    case changed, deleted, unreadable
}

/// What one chosen file proved.
public enum DrillFileResult: Sendable, Equatable {
    case identical
    case skipped(DrillSkip)
    case failed(String)
}

public enum DrillComparison {
    /// Whether the live file still is the one the snapshot recorded: same size and modification time
    /// to the nanosecond (what restic itself uses to decide a file is unchanged). Otherwise the
    /// verdict is decided without reading it.
    public static func skipReason(_ candidate: DrillCandidate, live: LiveFile) -> DrillSkip? {
        switch live {
        case .missing: return .deleted
        case .notRegular: return .changed
        case .unreadable: return .unreadable
        case .regular(let size, let modified):
            return size == candidate.size && modified == candidate.modified ? nil : .changed
        }
    }

    /// The verdict once both files were hashed. `liveAfter` is the live file as found after hashing
    /// it: a file written to while it was read is counted as changed, not as a mismatch.
    public static func verdict(_ candidate: DrillCandidate, restoredHash: String, liveHash: String, liveAfter: LiveFile) -> DrillFileResult {
        if let skip = skipReason(candidate, live: liveAfter) { return .skipped(skip) }
        if restoredHash == liveHash { return .identical }
        return .failed("differs from the live file although the live file's size and modification time are still those of the snapshot (restored sha256 \(restoredHash.prefix(16))…, live \(liveHash.prefix(16))…)")
    }
}

/// DRILL_PATHS, and whether a snapshot covers them.
public struct PathCoverage: Sendable {
    public let expected: [String]
    private var present = Set<String>()
    private var holdingFiles = Set<String>()

    public init(expected: [String]) {
        self.expected = expected
    }

    /// Colon- or space-separated absolute paths; trailing slashes dropped, duplicates removed.
    /// Relative paths are returned apart, for the configuration error.
    public static func parse(_ text: String) -> (paths: [String], relative: [String]) {
        var paths: [String] = [], relative: [String] = []
        for word in text.split(whereSeparator: { $0 == ":" || $0.isWhitespace }).map(String.init) {
            guard word.hasPrefix("/") else { relative.append(word); continue }
            var path = word
            while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
            if !paths.contains(path) { paths.append(path) }
        }
        return (paths, relative)
    }

    public mutating func observe(_ node: SnapshotNode) {
        guard !expected.isEmpty else { return }
        if expected.contains(node.path) { present.insert(node.path) }
        if node.kind == .file {
            for path in expected where isSameOrBelow(node.path, path) { holdingFiles.insert(path) }
        }
    }

    /// One sentence per expected path the snapshot does not cover. A directory that is there but holds
    /// no file counts as not covered: it is what an unmounted volume or an emptied mount point saves.
    public func problems(snapshot: String) -> [String] {
        expected.compactMap { path in
            if !present.contains(path) {
                return "snapshot \(snapshot) lacks \(path) (DRILL_PATHS): the backup no longer saves it (was it removed from the backup command, or is it outside the paths given to it?)"
            }
            if !holdingFiles.contains(path) {
                return "snapshot \(snapshot) holds \(path) (DRILL_PATHS) but no file in it: an empty directory is what an unmounted volume leaves (is it mounted where the backup runs?)"
            }
            return nil
        }
    }
}

/// Everything the drill found, and the sentence that says it.
public struct DrillReport: Sendable {
    public var snapshot: SnapshotSummary
    public var now: Date
    /// Each chosen file and its verdict, in path order.
    public var results: [(candidate: DrillCandidate, result: DrillFileResult)]
    /// Bytes restic restored (every chosen file it restored, compared or not).
    public var restoredBytes: Int64
    /// Problems of the snapshot itself: too old, empty, lacking a DRILL_PATHS entry.
    public var snapshotProblems: [String]
    /// DRILL_PATHS (empty: none configured).
    public var expectedPaths: [String]

    public init(snapshot: SnapshotSummary, now: Date, results: [(candidate: DrillCandidate, result: DrillFileResult)],
                restoredBytes: Int64, snapshotProblems: [String], expectedPaths: [String]) {
        self.snapshot = snapshot
        self.now = now
        self.results = results
        self.restoredBytes = restoredBytes
        self.snapshotProblems = snapshotProblems
        self.expectedPaths = expectedPaths
    }

    public var identical: Int { results.filter { $0.result == .identical }.count }
    public var failures: [(path: String, reason: String)] {
        results.compactMap { if case .failed(let reason) = $0.result { return ($0.candidate.path, reason) } else { return nil } }
    }
    public func skipped(_ reason: DrillSkip) -> Int {
        results.filter { $0.result == .skipped(reason) }.count
    }
    public var skippedCount: Int { results.count - identical - failures.count }
    public var passed: Bool { failures.isEmpty && snapshotProblems.isEmpty }

    /// "snapshot 1a2b3c4d of 5 h ago"
    public var snapshotPhrase: String {
        "snapshot \(snapshot.shortID) of \(describeSnapshotAge(now.timeIntervalSince(snapshot.time)))"
    }

    /// "3 skipped: changed since the snapshot", "3 skipped: 2 changed and 1 deleted since the snapshot".
    var skippedPhrase: String? {
        guard skippedCount > 0 else { return nil }
        let changed = skipped(.changed), deleted = skipped(.deleted), unreadable = skipped(.unreadable)
        var parts: [String] = []
        if changed > 0 && deleted > 0 {
            parts.append("\(changed) changed and \(deleted) deleted since the snapshot")
        } else if changed > 0 {
            parts.append(changed == skippedCount ? "changed since the snapshot" : "\(changed) changed since the snapshot")
        } else if deleted > 0 {
            parts.append(deleted == skippedCount ? "deleted since the snapshot" : "\(deleted) deleted since the snapshot")
        }
        if unreadable > 0 {
            parts.append(unreadable == skippedCount ? "this user cannot read the live files" : "\(unreadable) whose live file this user cannot read")
        }
        return "\(skippedCount) skipped: " + parts.joined(separator: ", ")
    }

    /// What was proven: "20 files restored and byte-identical to the live files (3 skipped: changed
    /// since the snapshot), 412 MiB read back, snapshot 1a2b3c4d of 5 h ago".
    public var provenPhrase: String {
        let restored = results.count - failures.count
        let files = "\(restored) file\(restored == 1 ? "" : "s")"
        var text: String
        if skippedCount == 0 {
            text = "\(files) restored and byte-identical to the live files"
        } else {
            text = "\(files) restored, \(identical) byte-identical to the live files (\(skippedPhrase!))"
        }
        text += ", \(formatSize(restoredBytes)) read back, \(snapshotPhrase)"
        return text
    }

    var coveragePhrase: String {
        expectedPaths.isEmpty
            ? "no expected paths configured (DRILL_PATHS), so only checked that the snapshot is not empty"
            : "it holds every path of DRILL_PATHS (\(expectedPaths.joined(separator: ", ")))"
    }

    /// The job's last line and the ping body's first.
    public var summary: String {
        if passed { return "drill finished: \(provenPhrase); \(coveragePhrase)" }
        var problems = snapshotProblems
        let failed = failures
        if !failed.isEmpty {
            let list = failed.map { "\($0.path) (\($0.reason))" }.joined(separator: "; ")
            problems.append("\(failed.count) of \(results.count) file\(results.count == 1 ? "" : "s") failed: \(list)")
        }
        var text = "drill failed: " + problems.joined(separator: "; ")
        if !results.isEmpty { text += ". Otherwise: \(provenPhrase)" }
        if failed.contains(where: { $0.reason.hasPrefix("restic could not restore it") }) {
            text += ". The repository's data for these files is damaged or unreadable: run `cloud-backup check --read-data` to find the damaged pack files (restic's documentation, \"Troubleshooting\", says how to repair them)"
        }
        return text
    }

    /// One line per chosen file, for the log and the ping body.
    public var fileLines: [String] {
        results.map { item in
            switch item.result {
            case .identical: return "identical: \(item.candidate.path) (\(formatSize(item.candidate.size)))"
            case .skipped(.changed): return "skipped (changed since the snapshot): \(item.candidate.path)"
            case .skipped(.deleted): return "skipped (deleted since the snapshot): \(item.candidate.path)"
            case .skipped(.unreadable): return "skipped (the live file cannot be read by this user): \(item.candidate.path)"
            case .failed(let reason): return "FAILED: \(item.candidate.path): \(reason)"
            }
        }
    }
}

/// "40 min ago", "5 h ago", "3 days ago".
func describeSnapshotAge(_ seconds: Double) -> String {
    let seconds = max(0, seconds)
    if seconds < 3600 { return "\(max(1, Int((seconds / 60).rounded()))) min ago" }
    if seconds < 48 * 3600 { return "\(Int((seconds / 3600).rounded())) h ago" }
    return "\(Int((seconds / 86_400).rounded())) days ago"
}

/// Sizes to three significant digits: "412 MiB", "12.3 KiB", "1.05 GiB", "0 B".
func formatSize(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let format = value >= 100 ? "%.0f" : value >= 10 ? "%.1f" : "%.2f"
    return String(format: format, value) + " " + units[unit]
}
