import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `restic cat config` says about the repository on a route.
enum RepositoryProbe: Equatable {
    /// Opened with RESTIC_PASSWORD; the repository's id (64 hex digits).
    case exists(id: String)
    case missing
    case wrongPassword
    case failed(ResticOutcome)

    static func run(_ invoker: ResticInvoker, timeout: Double = 120) -> RepositoryProbe {
        guard let result = try? invoker.run(["cat", "config", "--no-lock"], timeout: timeout) else {
            return .failed(.unreachable(reason: "restic did not answer within \(Int(timeout)) s"))
        }
        switch ResticOutcome.classify(status: result.status, output: result.standardError) {
        case .success:
            let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]
            return .exists(id: object?["id"] as? String ?? "")
        case .repositoryMissing: return .missing
        case .wrongPassword: return .wrongPassword
        case let other: return .failed(other)
        }
    }
}

/// Creating a repository, the one way both `backup` (on first use) and `config` do it.
///
/// `restic init` is not safe by itself: it checks that no `config` exists and then writes one, so two
/// inits started together both succeed and leave two keys and a config only one of them can open; and
/// through `rclone serve restic` a credential failure looks exactly like a missing repository. So
/// (docs/design.md#init):
/// 1. inits are serialised by an flock on `$CLOUD_BACKUP_STATE_DIR/init.lock`, shared by every job and
///    container that uses the state directory; the holder first asks again whether the repository
///    exists (another job may just have created it);
/// 2. the destination is listed directly, and restic is allowed to create a repository only over a
///    listing that worked and shows no file of a repository (config, keys/, data/, index/,
///    snapshots/, locks/); anything else is reported, never initialised over (exit 69);
/// 3. after `restic init`, the repository must be the one it created: the config's id is the id init
///    printed, and there is exactly one key. Only then does the job back up into it.
struct RepositoryCreation {
    let configuration: Configuration
    let context: JobContext
    let route: RepositoryRoute
    /// The runner for restic itself (registered, see ResticRunRegistry).
    let runner: any ProcessRunning

    enum Outcome: Equatable {
        case created(id: String)
        /// Another job created it while this one waited for the init lock.
        case foundExisting
    }

    private var log: Logger { context.log }
    private var destination: String { configuration.destination.displayPath }
    private var invoker: ResticInvoker { ResticInvoker(configuration: configuration, runner: runner, route: route) }

    func createIfSafe() -> Result<Outcome, CloudBackupError> {
        let lockPath = "\(configuration.stateDirectory)/init.lock"
        do {
            try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            return .failure(.cannotWrite(path: configuration.stateDirectory, reason: describe(error)))
        }
        var lock: FileLock
        switch FileLock.acquire(lockPath, wait: 0) {
        case .success(let acquired):
            lock = acquired
        case .failure(.cannotOpen(let code)):
            return .failure(.cannotWrite(path: lockPath, reason: String(cString: strerror(code))))
        case .failure(.busy):
            log.info("another job is creating the repository (it holds \(lockPath)): waiting for it")
            switch FileLock.acquire(lockPath, wait: Double(max(configuration.lockWaitSeconds, 60)), stop: { context.signals.stopRequested },
                                    sleep: context.sleep) {
            case .success(let acquired): lock = acquired
            case .failure(.cannotOpen(let code)): return .failure(.cannotWrite(path: lockPath, reason: String(cString: strerror(code))))
            case .failure(.busy):
                if context.signals.stopRequested { return .failure(.interrupted("stopped on request while another job was creating the repository")) }
                return .failure(.repositoryBusy(waitedSeconds: max(configuration.lockWaitSeconds, 60), holder: "another job is still creating the repository"))
            }
        }
        defer { lock.release() }

        switch RepositoryProbe.run(invoker) {
        case .exists:
            log.info("the repository at \(destination) was created by another job meanwhile: using it")
            return .success(.foundExisting)
        case .wrongPassword:
            return .failure(.wrongPassword(destination: destination))
        case .failed(let outcome):
            return .failure(.destinationUnreachable(destination: destination, reason: "\(outcome.reason); nothing was initialised"))
        case .missing:
            break
        }
        if case .failure(let error) = Self.safeToInitialize(configuration: configuration, runner: context.runner, log: log, route: route) {
            return .failure(error)
        }
        log.info("no repository at \(destination) yet: creating it with `restic init`")
        let created: ProcessResult
        do {
            guard let result = try invoker.run(ResticCommand.initialize, timeout: 600) else {
                return .failure(.destinationUnreachable(destination: destination, reason: "restic init did not finish within 600 s"))
            }
            created = result
        } catch {
            return .failure(CloudBackupError.from(error))
        }
        guard created.status.isSuccess else {
            let reason = ResticOutcome.fatalReason(in: created.standardError) ?? lastLine(created.standardError) ?? "\(created.status)"
            return .failure(.initFailed(destination: destination, reason: reason))
        }
        guard let id = Self.createdID(in: created.standardOutput) else {
            return .failure(.initConflict(destination: destination, detail: "restic init succeeded but did not say which repository it created"))
        }
        return verify(createdID: id).map { .created(id: id) }
    }

    /// The repository now at the destination is the one init created: its config has that id, and
    /// it has a single key. Two inits at once (from machines that do not share the state directory)
    /// leave two keys, or a config of the other one.
    func verify(createdID id: String) -> Result<Void, CloudBackupError> {
        switch RepositoryProbe.run(invoker) {
        case .exists(let found) where found.hasPrefix(id):
            break
        case .exists(let found):
            return .failure(.initConflict(destination: destination, detail: "its config now belongs to repository \(found.prefix(10)), not to \(id)"))
        case .wrongPassword, .missing:
            return .failure(.initConflict(destination: destination, detail: "the repository created (\(id)) can no longer be opened with RESTIC_PASSWORD: its config was overwritten"))
        case .failed(let outcome):
            return .failure(.initConflict(destination: destination, detail: "the new repository could not be read back (\(outcome.reason))"))
        }
        guard let keys = try? invoker.run(["list", "keys", "--no-lock"], timeout: 120), keys.status.isSuccess else {
            return .failure(.initConflict(destination: destination, detail: "its keys could not be listed"))
        }
        let count = keys.standardOutput.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.count
        guard count == 1 else {
            return .failure(.initConflict(destination: destination, detail: "it holds \(count) keys instead of the 1 just created"))
        }
        return .success(())
    }

    /// "created restic repository 1a2b3c4d5e at /srv/backup" (0.14 and 0.18).
    static func createdID(in output: String) -> String? {
        for line in output.split(separator: "\n") where line.hasPrefix("created restic repository ") {
            let words = line.split(separator: " ")
            if words.count >= 4, words[3].allSatisfy(\.isHexDigit) { return String(words[3]) }
        }
        return nil
    }

    /// The destination rule: a listing that worked and shows no file of a repository. Through
    /// `rclone serve restic`, a credential failure looks exactly like a missing repository, so an
    /// unreadable destination is never initialised either.
    static func safeToInitialize(configuration: Configuration, runner: any ProcessRunning, log: Logger,
                                 route: RepositoryRoute) -> Result<Void, CloudBackupError> {
        let destination = configuration.destination
        let contents = DestinationInspector.inspect(destination, runner: runner, environment: configuration.childEnvironment)
        switch contents {
        case .unreadable(let reason):
            return .failure(.destinationUnreachable(destination: destination.displayPath, reason: "\(reason). restic saw no repository there, but the destination could not be listed, so it was not initialised"))
        case .listed where contents.isInterruptedInit:
            return .failure(.unsafeToInitialize(destination: destination.displayPath, found: contents.artefactList,
                                                advice: "a `restic init` was interrupted after it saved a key and before the config. If no backup ever succeeded there, delete the keys/ directory at the destination and run the backup again"))
        case .listed where contents.resticArtefacts["config"] != nil:
            return .failure(.unsafeToInitialize(destination: destination.displayPath, found: contents.artefactList,
                                                advice: "a repository is there, but restic could not open it through \(route). Is the REST server serving another destination, or did its credentials fail? Try `cloud-backup restic cat config`"))
        case .listed where !contents.resticArtefacts.isEmpty:
            return .failure(.unsafeToInitialize(destination: destination.displayPath, found: contents.artefactList,
                                                advice: "a repository is or was here, and its config or keys are missing (deleted by hand or by a bucket lifecycle rule, a copy that stopped half-way, a backup that lost its destination). Restore config and keys/ from a copy if you have one (the data can then be read again); or, to start a new repository, point BACKUP_REMOTE to an empty location, or move these files away yourself"))
        case .listed(let names, let files):
            let unrelated = names.filter { !DestinationContents.resticNames.contains($0) }
            if !files.isEmpty {
                log.info("\(destination.displayPath) holds only empty directories of restic (\(files.keys.sorted().joined(separator: ", "))), as an interrupted `restic init` leaves them: nothing can be lost by creating the repository over them")
            }
            if !unrelated.isEmpty {
                log.warning("\(destination.displayPath) is not empty (\(unrelated.count) other entries) but holds no repository; creating the repository beside them")
            }
            return .success(())
        }
    }
}

extension ResticOutcome {
    /// The outcome as a clause for messages.
    var reason: String {
        switch self {
        case .success: return "success"
        case .incompleteSnapshot: return "some files could not be read"
        case .repositoryMissing: return "there is no repository"
        case .locked(let holder): return "the repository is locked (\(holder))"
        case .wrongPassword: return "wrong password"
        case .unreachable(let reason), .failed(let reason): return reason
        case .interrupted: return "interrupted"
        }
    }
}
