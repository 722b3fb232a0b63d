import Foundation

/// restic command lines and output readers for `restore` and `drill`: pure functions, checked against
/// restic 0.14's JSON (and the shapes 0.17+ add: `message_type` beside `struct_type`).
extension ResticCommand {
    /// This host's newest snapshot of each set of paths (`--latest 1` keeps one per host and path
    /// set); the caller takes the newest of those. Reading the snapshot list needs no lock.
    public static func latestSnapshots(host: String) -> [String] {
        ["snapshots", "--json", "--no-lock", "--latest", "1", "--host", host]
    }

    /// Every node of one snapshot, one JSON object per line. Takes restic's shared (reader) lock, so a
    /// prune cannot remove the trees while they are read.
    public static func listSnapshot(_ id: String) -> [String] {
        ["ls", "--json", id]
    }

    /// `restic restore ID --target T --verify [--include P]…`. Shared lock. `--verify` makes restic read
    /// the restored files back and check every blob's hash against the snapshot, so what it wrote is
    /// proven to be the snapshot's content even for a file with no live copy to compare with.
    /// `includes` are restic's patterns as given; `restore` (the subcommand) passes the user's through,
    /// the drill passes `includePattern(forPath:)` of each chosen file.
    public static func restore(snapshot: String, target: String, includes: [String]) -> [String] {
        ["restore", snapshot, "--target", target, "--verify"] + includes.flatMap { ["--include", $0] }
    }

    /// `--no-cache` when root works on another user's state directory (`docker exec --user root --env
    /// HOME=/home/user`, the restore that keeps owners): restic's cache is under that user's home, and
    /// files root leaves there would be in the user's way at the next job.
    public static func cacheArguments(euid: UInt32, stateDirectoryOwner: UInt32?) -> [String] {
        euid == 0 && (stateDirectoryOwner ?? 0) != 0 ? ["--no-cache"] : []
    }

    /// restic reads `--include` as a pattern (`*`, `?`, `[…]`, with `\` escaping them, as Go's
    /// filepath.Match): a file name holding one of them would select other files, or none. Escaped,
    /// the pattern matches exactly this path (tested with restic 0.14 on `we[ir]d*/q?.txt`).
    public static func includePattern(forPath path: String) -> String {
        var pattern = ""
        for character in path {
            if "\\*?[]".contains(character) { pattern.append("\\") }
            pattern.append(character)
        }
        return pattern
    }
}

/// One snapshot as `restic snapshots --json` describes it.
public struct SnapshotSummary: Sendable, Equatable {
    public var id: String
    public var shortID: String
    public var time: Date
    public var hostname: String
    /// What `restic backup` was given (absolute).
    public var paths: [String]

    public init(id: String, shortID: String, time: Date, hostname: String, paths: [String]) {
        self.id = id
        self.shortID = shortID
        self.time = time
        self.hostname = hostname
        self.paths = paths
    }

    /// The newest snapshot of `host` in `restic snapshots --json` output; nil when there is none, and
    /// a failure when the output is not restic's list.
    public static func newest(inSnapshotsJSON text: String, host: String) -> Result<SnapshotSummary?, CloudBackupError> {
        guard let list = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else {
            return .failure(.internalError("restic snapshots --json printed something that is not a list of snapshots"))
        }
        let snapshots = list.compactMap { object -> SnapshotSummary? in
            guard object["hostname"] as? String == host, let id = object["id"] as? String,
                  let time = (object["time"] as? String).flatMap(parseResticTime) else { return nil }
            return SnapshotSummary(id: id, shortID: object["short_id"] as? String ?? String(id.prefix(8)), time: time,
                                   hostname: host, paths: object["paths"] as? [String] ?? [])
        }
        return .success(snapshots.max { $0.time < $1.time })
    }
}

/// A modification time to the nanosecond, as restic records it (and as stat(2) gives it), so that
/// "unchanged since the snapshot" is an exact comparison, not one rounded by a Double.
public struct FileTime: Sendable, Equatable, Comparable {
    public var seconds: Int64
    public var nanoseconds: Int32

    public init(seconds: Int64, nanoseconds: Int32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func < (left: FileTime, right: FileTime) -> Bool {
        (left.seconds, left.nanoseconds) < (right.seconds, right.nanoseconds)
    }

    public var date: Date { Date(timeIntervalSince1970: Double(seconds) + Double(nanoseconds) / 1e9) }

    /// RFC 3339 with up to nine fraction digits and a `Z` or `±hh:mm` zone, as Go's RFC3339Nano writes it
    /// (trailing zeros dropped: `.8307` is 830,700,000 ns). Parsed by hand: a snapshot can list millions
    /// of files, and a date formatter per line would dominate the run.
    public static func parse(_ text: String) -> FileTime? {
        let bytes = Array(text.utf8)
        func number(_ start: Int, _ count: Int) -> Int64? {
            guard start + count <= bytes.count else { return nil }
            var value: Int64 = 0
            for byte in bytes[start..<start + count] {
                guard byte >= 48 && byte <= 57 else { return nil }
                value = value * 10 + Int64(byte - 48)
            }
            return value
        }
        guard bytes.count >= 20, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"), bytes[10] == UInt8(ascii: "T"),
              bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
              let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var index = 19
        var nanoseconds: Int64 = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var digits = 0
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
                if digits < 9 { nanoseconds = nanoseconds * 10 + Int64(bytes[index] - 48) }
                digits += 1
                index += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 9) { nanoseconds *= 10 }
        }
        guard index < bytes.count else { return nil }
        var offset: Int64 = 0
        switch bytes[index] {
        case UInt8(ascii: "Z"):
            guard index + 1 == bytes.count else { return nil }
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard index + 6 == bytes.count, bytes[index + 3] == UInt8(ascii: ":"),
                  let hours = number(index + 1, 2), let minutes = number(index + 4, 2) else { return nil }
            offset = (hours * 3600 + minutes * 60) * (bytes[index] == UInt8(ascii: "+") ? 1 : -1)
        default:
            return nil
        }
        let seconds = daysFromCivil(year: year, month: month, day: day) * 86_400 + hour * 3600 + minute * 60 + second - offset
        return FileTime(seconds: seconds, nanoseconds: Int32(nanoseconds))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

/// One entry of `restic ls --json`.
public struct SnapshotNode: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case file, directory, other }

    public var path: String
    public var kind: Kind
    public var size: Int64
    public var modified: FileTime

    public init(path: String, kind: Kind, size: Int64, modified: FileTime) {
        self.path = path
        self.kind = kind
        self.size = size
        self.modified = modified
    }

    /// nil for the snapshot line that comes first, and for anything that is not a node.
    public static func parse(jsonLine line: Substring) -> SnapshotNode? {
        guard line.hasPrefix("{"), line.contains("\"node\""),
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              (object["struct_type"] as? String ?? object["message_type"] as? String) == "node",
              let path = object["path"] as? String, let type = object["type"] as? String else { return nil }
        let kind: Kind = type == "file" ? .file : type == "dir" ? .directory : .other
        let size = (object["size"] as? NSNumber)?.int64Value ?? 0
        let modified = (object["mtime"] as? String).flatMap(FileTime.parse) ?? FileTime(seconds: 0, nanoseconds: 0)
        return SnapshotNode(path: path, kind: kind, size: size, modified: modified)
    }
}

/// What `restic restore` said about files it could not restore.
public struct RestoreErrors: Sendable, Equatable {
    /// Each file named in an error (of the paths asked for, or below them) and restic's reasons.
    public var byFile: [(path: String, reason: String)]
    /// Error lines that name no file asked for.
    public var other: [String]

    public static func == (left: RestoreErrors, right: RestoreErrors) -> Bool {
        left.byFile.map { "\($0.path)\u{0}\($0.reason)" } == right.byFile.map { "\($0.path)\u{0}\($0.reason)" } && left.other == right.other
    }

    /// restic (0.14 to 0.18) reports each file's failure as `ignoring error for PATH: REASON` and goes
    /// on. A path may itself hold ": ", so the line is matched against the paths that were asked for
    /// (longest first) rather than cut at the first colon.
    public static func parse(_ errors: String, paths: [String]) -> RestoreErrors {
        var result = RestoreErrors(byFile: [], other: [])
        let prefix = "ignoring error for "
        let candidates = paths.sorted { $0.count > $1.count }
        for line in errors.split(separator: "\n") {
            guard let range = line.range(of: prefix) else { continue }
            let rest = line[range.upperBound...]
            if let path = candidates.first(where: { rest.hasPrefix($0 + ": ") }) {
                result.byFile.append((path, String(rest.dropFirst(path.count + 2))))
            } else {
                result.other.append(String(rest))
            }
        }
        return result
    }
}
