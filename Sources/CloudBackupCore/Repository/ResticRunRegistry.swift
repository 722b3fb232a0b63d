import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Every restic that a cloud-backup command starts is registered in `$CLOUD_BACKUP_STATE_DIR/running/`:
/// one small file per restic process, holding what restic writes into its repository lock (host name
/// and PID) plus the PID namespace and the start time. The file is `flock`ed by the job, and the
/// locked descriptor is inherited by restic itself, so the lock is held exactly as long as either of
/// them lives, in whatever container they run.
///
/// That is the proof restic lacks: restic judges a lock stale by "same host name and PID not running",
/// but two containers of one compose project share the host name and not the PID namespace, so a
/// running job's lock looks dead from the other container. With the registry, a lock is provably
/// abandoned only when the registered process that made it no longer holds its file (see
/// `RepositoryLocks.judge`). docs/design.md#locks explains the whole rule.
public struct ResticRunRegistry: Sendable {
    public let directory: String

    public init(stateDirectory: String) {
        directory = "\(stateDirectory)/running"
    }

    /// What one registered restic process wrote about itself.
    public struct Entry: Codable, Sendable, Equatable {
        public var hostname: String
        /// restic's PID in its own PID namespace: what restic writes into its lock files.
        public var pid: Int32
        public var pidNamespace: String
        /// The cloud-backup process that started it.
        public var jobPID: Int32
        /// Seconds since 1970, taken before restic started: any lock it made is younger.
        public var started: Double
        public var command: String
        /// When restic ended, as seen by its job (nil: still running, or the job itself was killed).
        public var ended: Double?
        /// Set when restic was killed by a signal (its lock stayed behind for sure).
        public var killed: Bool?
    }

    /// A registry file as another process sees it.
    public struct Observed: Sendable, Equatable {
        public var path: String
        public var entry: Entry?
        /// The job or its restic still holds the file.
        public var alive: Bool
    }

    /// Root running restic on a user's state directory (a restore with the original owners, `docker exec
    /// --user root`) makes its registry files belong to the state directory's owner, so that the user's
    /// jobs can still read them and prove a lock of that restic abandoned.
    func giveToStateOwner(_ descriptor: Int32) {
        guard geteuid() == 0 else { return }
        var state = stat()
        guard stat((directory as NSString).deletingLastPathComponent, &state) == 0, state.st_uid != 0 else { return }
        _ = chown(directory, state.st_uid, state.st_gid)
        _ = fchown(descriptor, state.st_uid, state.st_gid)
    }

    /// Every registered process, alive or not. Files being set up (no `.json` yet) are skipped.
    public func observe() -> [Observed] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted().compactMap { name in
            let path = "\(directory)/\(name)"
            guard let held = FileLock.isHeld(path) else { return nil }
            let entry = FileManager.default.contents(atPath: path).flatMap { try? JSONDecoder().decode(Entry.self, from: $0) }
            return Observed(path: path, entry: entry, alive: held)
        }
    }

    /// Removes a registry file whose holders have all ended (never a live one: the exclusive lock
    /// taken here fails while anyone holds it).
    @discardableResult
    public func removeIfEnded(_ path: String) -> Bool {
        guard case .success(let lock) = FileLock.acquire(path, exclusive: true) else { return false }
        defer { lock.release() }
        return unlink(path) == 0
    }

    /// Housekeeping that needs no repository access: set-ups that never finished; entries that ended
    /// over 35 minutes ago (a lock of theirs was refreshed at the latest when they ended, so it is stale
    /// by age now); entries of killed jobs (no end recorded) older than a day.
    public func removeLongEnded(now: Date = Date()) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names {
            let path = "\(directory)/\(name)"
            guard FileLock.isHeld(path) == false else { continue }
            if name.hasSuffix(".starting") {
                removeIfEnded(path)
                continue
            }
            guard let data = FileManager.default.contents(atPath: path),
                  let entry = try? JSONDecoder().decode(Entry.self, from: data) else { continue }
            let since = now.timeIntervalSince1970
            if let ended = entry.ended, since - ended > RepositoryLocks.staleAge + 300 {
                removeIfEnded(path)
            } else if entry.ended == nil, since - entry.started > 86_400 {
                removeIfEnded(path)
            }
        }
    }
}

/// A runner that registers every restic it starts that may write a lock (see `ResticRunRegistry`);
/// other programs and lock-free restic commands pass through. When the registry cannot be written, restic still runs, unregistered, with a warning: a
/// lock it leaves is then only ever removed by age, which is slow but never wrong.
public struct RegisteringRunner: ProcessRunning {
    public let base: any ProcessRunning
    public let registry: ResticRunRegistry
    public let hostName: String
    public let log: Logger

    public init(base: any ProcessRunning, registry: ResticRunRegistry, hostName: String, log: Logger) {
        self.base = base
        self.registry = registry
        self.hostName = hostName
        self.log = log
    }

    /// restic commands that never write a lock: registering them would only add entries whose PID
    /// could match another container's lock by chance.
    static func makesLocks(_ arguments: [String]) -> Bool {
        let subcommand = arguments.first { !$0.hasPrefix("-") }
        return !arguments.contains("--no-lock") && !["init", "version", "help", "generate", "cache"].contains(subcommand ?? "")
    }

    public func launch(_ spec: ProcessSpec) throws -> any RunningProcess {
        guard (spec.executable as NSString).lastPathComponent == "restic", Self.makesLocks(spec.arguments) else { return try base.launch(spec) }
        let started = Date().timeIntervalSince1970
        let name = UUID().uuidString.lowercased()
        let setUp = "\(registry.directory)/\(name).starting"
        let lock: FileLock
        do {
            try FileManager.default.createDirectory(atPath: registry.directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            switch FileLock.acquire(setUp, createExclusively: true) {
            case .success(let acquired): lock = acquired
            case .failure(.cannotOpen(let code)): throw CloudBackupError.system("creating \(setUp)", code)
            case .failure(.busy): throw CloudBackupError.internalError("\(setUp) is locked by someone else")
            }
            registry.giveToStateOwner(lock.descriptor)
        } catch {
            log.warning("cannot register restic in \(registry.directory) (\(CloudBackupError.from(error).description)): running it unregistered; a lock it leaves behind will only be removed once it is 30 min old")
            return try base.launch(spec)
        }
        var registered = spec
        registered.inheritedDescriptors.append(lock.descriptor)
        let child: any RunningProcess
        do {
            child = try base.launch(registered)
        } catch {
            unlink(setUp)
            lock.release()
            throw error
        }
        let entry = ResticRunRegistry.Entry(hostname: hostName, pid: child.pid, pidNamespace: Namespaces.pid, jobPID: getpid(),
                                            started: started, command: spec.arguments.first { !$0.hasPrefix("-") } ?? "")
        let path = "\(registry.directory)/\(name).json"
        lock.write(Self.encode(entry))
        if rename(setUp, path) != 0 {
            log.warning("cannot register restic (PID \(child.pid)) in \(registry.directory): \(String(cString: strerror(errno)))")
        }
        return RegisteredProcess(child: child, lock: lock, entry: entry)
    }

    static func encode(_ entry: ResticRunRegistry.Entry) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(entry)) ?? Data(), as: UTF8.self) + "\n"
    }
}

/// A registered restic. When it ends, its registry file stays, marked with the time it ended (and
/// whether a signal killed it), as the proof that a lock it may have left (restic can fail to remove
/// its lock, e.g. when the destination went away, and a killed restic never does) belongs to a process
/// that has ended. `removeLongEnded` and the lock sweep delete the file once no lock of it can remain.
final class RegisteredProcess: RunningProcess, @unchecked Sendable {
    private let child: any RunningProcess
    private let lock: FileLock
    private let entry: ResticRunRegistry.Entry
    private let finished = OnceFlag()

    init(child: any RunningProcess, lock: FileLock, entry: ResticRunRegistry.Entry) {
        self.child = child
        self.lock = lock
        self.entry = entry
    }

    var pid: pid_t { child.pid }
    var hasExited: Bool { child.hasExited }
    func send(_ signal: Int32) { child.send(signal) }

    func wait() -> ProcessResult {
        let result = child.wait()
        if finished.setFirstTime() {
            var ended = entry
            ended.ended = Date().timeIntervalSince1970
            if case .exited = result.status {} else { ended.killed = true }
            lock.write(RegisteringRunner.encode(ended))
            lock.release()
        }
        return result
    }
}
