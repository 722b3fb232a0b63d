import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `cloud-backup restore` was asked.
public struct RestoreRequest: Sendable, Equatable {
    /// A snapshot ID; nil for this host's latest (`latest` means the same).
    public var snapshot: String?
    /// Absolute.
    public var target: String
    /// restic's `--include` patterns, as given (a path, or a pattern with `*`).
    public var includes: [String]
    /// Restore into a target that is not empty.
    public var overwrite: Bool

    public static let options = Command.Options(
        valued: ["--target", "--include"], repeatable: ["--include"], switches: ["--overwrite"], required: ["--target"], operands: ["SNAPSHOT"],
        synopsis: "[SNAPSHOT] --target DIR [--include PATH]… [--overwrite]")

    public static func parse(_ arguments: [String], currentDirectory: String) throws -> RestoreRequest {
        let parsed = try options.parse(arguments, command: "restore")
        let targets = parsed.values["--target"] ?? []
        var snapshot = parsed.operands.first
        if snapshot == "latest" { snapshot = nil }
        if let id = snapshot, !(4...64).contains(id.count) || !id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
            throw CloudBackupError.usage("restore: \(shellQuoted(id)) is not a snapshot ID: give the ID `cloud-backup restic snapshots` shows (8 hex digits are enough), or leave it out for this host's latest snapshot.")
        }
        let given = targets[0]
        let absolute = given.hasPrefix("/") ? given : "\(currentDirectory)/\(given)"
        return RestoreRequest(snapshot: snapshot, target: (absolute as NSString).standardizingPath,
                              includes: parsed.values["--include"] ?? [], overwrite: parsed.switches.contains("--overwrite"))
    }
}

/// `restore`: restic's restore with the repository preset and the jobs' route rules, guarded and
/// explained. It never deletes anything: a target that exists and is not empty is refused unless
/// `--overwrite` says so (restic then replaces files of the same name and leaves the others). It
/// takes restic's shared lock and waits for an exclusive one like the jobs do. Afterwards it says
/// what it restored (files, bytes, time), whether owners were kept, and how to compare with the originals.
public struct RestoreCommand {
    public let request: RestoreRequest
    public let configuration: Configuration
    public let context: JobContext

    public init(request: RestoreRequest, configuration: Configuration, context: JobContext) {
        self.request = request
        self.configuration = configuration
        self.context = context
    }

    private var log: Logger { context.log }

    /// What is at the target now.
    public enum TargetState: Sendable, Equatable {
        case absent
        case empty
        case notEmpty(entries: Int)
        case notADirectory
        case unreadable(String)
    }

    public static func inspect(target: String) -> TargetState {
        var info = stat()
        guard lstat(target, &info) == 0 else {
            return errno == ENOENT ? .absent : .unreadable(String(cString: strerror(errno)))
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { return .notADirectory }
        do {
            let entries = try FileManager.default.contentsOfDirectory(atPath: target)
            return entries.isEmpty ? .empty : .notEmpty(entries: entries.count)
        } catch {
            return .unreadable(describe(error))
        }
    }

    /// Why the target is refused, or nil.
    public static func refusal(_ state: TargetState, target: String, overwrite: Bool) -> CloudBackupError? {
        switch state {
        case .absent, .empty:
            return nil
        case .notEmpty(let entries):
            if overwrite { return nil }
            return .targetRefused("restore refused: \(target) is not empty (\(entries) entr\(entries == 1 ? "y" : "ies")), and a restore there would mix the snapshot's files with what is there and replace files of the same name. Restore into a new or empty directory, or add --overwrite to restore into this one anyway (the snapshot's files replace those of the same name; nothing is deleted).")
        case .notADirectory:
            return .targetRefused("restore refused: \(target) exists and is not a directory. Choose a new or empty directory.")
        case .unreadable(let reason):
            return .targetRefused("restore refused: cannot look into \(target) to see whether it is empty (\(reason)). Choose a directory this user can read, or a new one.")
        }
    }

    public func run() -> Int32 {
        let started = Date()
        guard ExecutableLookup.resolve("restic", environment: configuration.childEnvironment) != nil else {
            let error = CloudBackupError.programNotFound(name: "restic", path: configuration.childEnvironment["PATH"] ?? "")
            log.error(error.description)
            return error.exitCode
        }
        let state = Self.inspect(target: request.target)
        if let refusal = Self.refusal(state, target: request.target, overwrite: request.overwrite) {
            log.error(refusal.description)
            return refusal.exitCode
        }
        if let failed = InfnSetup.prepareOrExitCode(configuration, context: context) { return failed }
        let registry = ResticRunRegistry(stateDirectory: configuration.stateDirectory)
        let runner = RegisteringRunner(base: context.runner, registry: registry, hostName: context.hostName, log: log)
        let route = RouteFinder.find(configuration: configuration, log: log)
        log.info("restore using \(route)")
        let invoker = ResticInvoker(configuration: configuration, runner: runner, route: route)
        let host = configuration.resticHost ?? context.hostName
        let cache = ResticCommand.cacheArguments(euid: geteuid(), stateDirectoryOwner: ownerOf(configuration.stateDirectory))

        let snapshot: SnapshotSummary
        switch resolveSnapshot(invoker: invoker, host: host, extra: cache) {
        case .failure(let message):
            log.error(message.text)
            return message.code
        case .success(let found):
            snapshot = found
        }
        let age = describeSnapshotAge(Date().timeIntervalSince(snapshot.time))
        let selection = request.includes.isEmpty ? "" : " (only \(request.includes.joined(separator: ", ")))"
        log.info("restoring snapshot \(snapshot.shortID) of host \(snapshot.hostname) (taken \(age), of \(snapshot.paths.joined(separator: ", ")))\(selection) into \(request.target)")

        var spec = invoker.spec(ResticCommand.restore(snapshot: snapshot.id, target: request.target, includes: request.includes) + cache)
        spec.standardOutput = .stream(tailLimit: 64 * 1024)
        spec.standardError = .stream(tailLimit: 64 * 1024)
        let wait = LockWait(configuration: configuration, context: context, route: route, runner: runner, what: "the restore")
        let result: ProcessResult
        let outcome: ResticOutcome
        do {
            switch try wait.run({
                try runInterruptibly(spec, runner: runner, signals: context.signals, graceSeconds: configuration.stopGraceSeconds, log: log)
            }) {
            case .stopped:
                log.error("restore stopped on request while waiting for a lock; nothing was restored")
                return ExitCode.interrupted
            case .busy(let busy):
                log.error("restore not run: repository busy — \(busy.description)")
                return busy.exitCode
            case .finished(let finished, let classified):
                result = finished
                outcome = classified
            }
        } catch {
            let failure = CloudBackupError.from(error)
            log.error(failure.description)
            return failure.exitCode
        }
        let seconds = Date().timeIntervalSince(started)
        let contents = Self.count(request.target)
        let holds = "\(contents.files) file\(contents.files == 1 ? "" : "s") (\(formatSize(contents.bytes)))"
        switch outcome {
        case .success:
            let what = state == .absent || state == .empty
                ? "\(holds) restored from snapshot \(snapshot.shortID) into \(request.target) in \(formatDuration(seconds))"
                : "snapshot \(snapshot.shortID) restored into \(request.target) in \(formatDuration(seconds)) (--overwrite: it now holds \(holds), what was there before included)"
            log.info("restore finished: \(what); \(Self.ownership(euid: geteuid(), user: Self.userName()))")
            for line in Self.comparisonCommands(target: request.target, snapshotPaths: snapshot.paths, includes: request.includes) {
                log.info(line)
            }
            return ExitCode.success
        case .interrupted:
            log.error("restore interrupted: stopped on request; \(request.target) keeps what was restored so far (\(holds)); nothing was deleted")
            return ExitCode.interrupted
        default:
            let errors = RestoreErrors.parse(result.standardError, paths: [])
            let reason: String
            if !errors.other.isEmpty {
                let count = errors.other.count
                reason = "\(count) item\(count == 1 ? "" : "s") could not be restored: \(errors.other.prefix(10).joined(separator: "; "))\(count > 10 ? "; and \(count - 10) more" : "")"
            } else {
                reason = outcome.reason
            }
            log.error("restore failed: \(reason) (exit code \(result.status.shellExitCode)); \(request.target) holds \(holds)")
            return result.status.isSuccess ? ExitCode.failure : result.status.shellExitCode
        }
    }

    struct Message: Error { var code: Int32; var text: String }

    /// This host's latest snapshot, or the one asked for (of any host).
    private func resolveSnapshot(invoker: ResticInvoker, host: String, extra: [String]) -> Result<SnapshotSummary, Message> {
        let arguments = (request.snapshot.map { ["snapshots", "--json", "--no-lock", $0] } ?? ResticCommand.latestSnapshots(host: host)) + extra
        let listed: ProcessResult?
        do {
            listed = try invoker.run(arguments, timeout: 300)
        } catch {
            let failure = CloudBackupError.from(error)
            return .failure(Message(code: failure.exitCode, text: failure.description))
        }
        guard let listed else {
            return .failure(Message(code: ExitCode.failure, text: "restore failed: listing the snapshots did not finish within 300 s. Check the destination (`cloud-backup status`)"))
        }
        guard listed.status.isSuccess else {
            let outcome = ResticOutcome.classify(status: listed.status, output: listed.standardError)
            let reason = outcome == .wrongPassword
                ? CloudBackupError.wrongPassword(destination: configuration.destination.displayPath).description : outcome.reason
            return .failure(Message(code: listed.status.shellExitCode, text: "restore failed: \(reason)"))
        }
        let list = (try? JSONSerialization.jsonObject(with: Data(listed.standardOutput.utf8)) as? [[String: Any]]) ?? []
        let wantedHost = request.snapshot == nil ? host : nil
        let snapshots = list.compactMap { object -> SnapshotSummary? in
            guard let id = object["id"] as? String, let time = (object["time"] as? String).flatMap(parseResticTime) else { return nil }
            let hostname = object["hostname"] as? String ?? ""
            if let wantedHost, hostname != wantedHost { return nil }
            return SnapshotSummary(id: id, shortID: object["short_id"] as? String ?? String(id.prefix(8)), time: time,
                                   hostname: hostname, paths: object["paths"] as? [String] ?? [])
        }
        guard let newest = snapshots.max(by: { $0.time < $1.time }) else {
            let text = request.snapshot.map { "restore failed: no snapshot \($0) in the repository (`cloud-backup restic snapshots` lists them)" }
                ?? "restore failed: the repository holds no snapshot of host \(host): give the ID of the snapshot to restore (`cloud-backup restic snapshots` lists every host's)"
            return .failure(Message(code: ExitCode.failure, text: text))
        }
        return .success(newest)
    }

    /// Whether owners came back. restic sets owners only when it runs as root (as `cp -a` does); as
    /// another user it keeps the modes and silently leaves the files to that user.
    static func ownership(euid: uid_t, user: String) -> String {
        if euid == 0 { return "owners, groups and modes kept (run as root)" }
        return "modes kept, but owners were not: every restored file belongs to \(user). To keep the owners, run the restore as root (Docker: `docker exec --user root --env HOME=/home/user cloud-backup cloud-backup restore …`; a VM: `sudo --preserve-env cloud-backup restore …`)"
    }

    static func userName() -> String {
        guard let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name else { return "uid \(geteuid())" }
        return String(cString: name)
    }

    /// `diff -r` lines comparing each restored top-level path with its original: the paths of an
    /// `--include` that names a path (no pattern characters), else the snapshot's paths; only those
    /// that were restored.
    static func comparisonCommands(target: String, snapshotPaths: [String], includes: [String]) -> [String] {
        let literal = includes.filter { $0.hasPrefix("/") && !$0.contains(where: { "*?[\\".contains($0) }) }
        let roots = literal.isEmpty ? snapshotPaths : literal
        let restored = roots.filter { access(target + $0, F_OK) == 0 }
        if restored.isEmpty { return ["the restored files are under \(target), each at its original path"] }
        return restored.map { "compare with the originals: diff -r \(shellQuoted(target + $0)) \(shellQuoted($0))" }
    }

    /// Regular files below `path` and their bytes, without following symbolic links.
    static func count(_ path: String) -> (files: Int, bytes: Int64) {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else { return (0, 0) }
        defer { close(descriptor) }
        var total = (files: 0, bytes: Int64(0))
        countContents(of: descriptor, into: &total)
        return total
    }

    private static func countContents(of descriptor: Int32, into total: inout (files: Int, bytes: Int64)) {
        guard let names = entryNames(ofDirectory: descriptor) else { return }
        for name in names {
            var info = stat()
            guard fstatat(descriptor, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            switch info.st_mode & S_IFMT {
            case S_IFREG:
                total.files += 1
                total.bytes += Int64(info.st_size)
            case S_IFDIR:
                let child = openat(descriptor, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if child >= 0 {
                    countContents(of: child, into: &total)
                    close(child)
                }
            default:
                break
            }
        }
    }
}

/// The owner of a file (nil when it cannot be read).
func ownerOf(_ path: String) -> UInt32? {
    var info = stat()
    return stat(path, &info) == 0 ? info.st_uid : nil
}
