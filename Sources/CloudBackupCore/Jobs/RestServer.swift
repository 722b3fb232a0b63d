import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `start-server`: `rclone serve restic` on the destination, in the foreground, kept alive.
/// rclone is restarted when it dies. A death before it ever answered, or no answer within
/// SERVER_START_TIMEOUT_SECONDS (a destination that accepts connections and never replies), is a
/// failure to start: those back off (1, 2, 4 … 30 s) and after `maxQuickFailures` in a row the server
/// gives up and exits 69, so Docker's restart policy (or the admin) takes over. A death after it
/// served is a crash: restarted at once, the count starts over. SIGTERM/SIGINT stop rclone and end
/// the command within the grace period.
///
/// One server per state directory: it holds `server.lock` there for its whole life and keeps
/// `server.json` up to date (port, destination, namespaces, rclone's PID, ready or not), which is how
/// jobs prove that what answers on the port is this server (ServerRecord, ServerIdentity).
public struct RestServer {
    public let configuration: Configuration
    public let context: JobContext
    public var maxQuickFailures = 5
    /// The binary the built-in schedule starts its jobs with: this one.
    public var selfExecutable: String? = CommandLineInterface.runningBinary()

    public init(configuration: Configuration, context: JobContext) {
        self.configuration = configuration
        self.context = context
        if let value = context.environment["CLOUD_BACKUP_SERVER_MAX_QUICK_FAILURES"].flatMap(Int.init), value > 0 {
            maxQuickFailures = value
        }
    }

    private var log: Logger { context.log }

    public func run() -> Int32 {
        let schedule: ScheduleSettings
        switch ScheduleSettings.load(environment: context.environment, hostName: context.hostName) {
        case .success(let settings): schedule = settings
        case .failure(let problem):
            log.error(problem.description)
            return problem.exitCode
        }
        guard ExecutableLookup.resolve("rclone", environment: configuration.childEnvironment) != nil else {
            let error = CloudBackupError.programNotFound(name: "rclone", path: configuration.childEnvironment["PATH"] ?? "")
            log.error(error.description)
            return error.exitCode
        }
        if case .localDirectory(let path, _) = configuration.destination {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                let failure = CloudBackupError.cannotWrite(path: path, reason: describe(error))
                log.error(failure.description)
                return failure.exitCode
            }
        }
        if let failed = InfnSetup.prepareOrExitCode(configuration, context: context) { return failed }
        let serverLock: FileLock
        switch claimStateDirectory() {
        case .success(let lock): serverLock = lock
        case .failure(let problem):
            log.error(problem.description)
            return problem.exitCode
        }
        defer {
            unlink(ServerRecord.recordPath(stateDirectory: configuration.stateDirectory))
            serverLock.release()
        }
        if let problem = claimPort() {
            log.error(problem.description)
            return problem.exitCode
        }
        let record = ServerRecord(pid: getpid(), pidNamespace: Namespaces.pid, networkNamespace: Namespaces.network, hostname: context.hostName,
                                  port: configuration.restPort, destination: configuration.destination.rclonePath,
                                  appendOnly: configuration.appendOnly, rclonePID: nil, state: .starting, lastError: nil, updated: 0)
        let published = PublishedServerRecord(record, stateDirectory: configuration.stateDirectory, log: log)
        do {
            try published.write()
        } catch {
            let failure = CloudBackupError.from(error)
            log.error("\(failure.description) Jobs find the server through this file, so the server does not start without it.")
            return failure.exitCode
        }
        func publish(_ update: (inout ServerRecord) -> Void) { published.update(update) }
        let authenticated = configuration.restCredentials != nil
        let address = RcloneCommand.listenAddress(port: configuration.restPort, authenticated: authenticated)
        if authenticated {
            log.info("serving \(configuration.destination) on port \(configuration.restPort), all interfaces, authentication required")
        } else {
            log.info("serving \(configuration.destination) on 127.0.0.1:\(configuration.restPort) only: RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD are not set, so other machines and containers cannot connect (set both to allow them, with authentication)")
        }
        if configuration.appendOnly {
            log.info("append-only mode: clients can add snapshots but not delete or overwrite data (forget/prune must go to the destination directly)")
        }
        let spec = ProcessSpec(
            executable: "rclone",
            arguments: RcloneCommand.serveRestic(path: configuration.destination.rclonePath, listenAddress: address,
                                                 appendOnly: configuration.appendOnly),
            environment: RcloneCommand.serveEnvironment(base: configuration.childEnvironment, credentials: configuration.restCredentials),
            standardInput: .null,
            standardOutput: .stream(tailLimit: 16 * 1024),
            standardError: .stream(tailLimit: 16 * 1024))
        let rcloneLog = RcloneLogWatcher(published: published)

        let current = CurrentChild()
        let stopping = OnceFlag()
        let grace = configuration.stopGraceSeconds
        let log = self.log
        let settled = Locked(false)
        var scheduler: Scheduler?
        if !schedule.isEmpty {
            guard let executable = selfExecutable else {
                let failure = CloudBackupError.serverFailed("the built-in schedule starts this program's own jobs, but its path cannot be read from /proc/self/exe (was the binary replaced while it ran?): restart start-server.")
                log.error(failure.description)
                return failure.exitCode
            }
            scheduler = Scheduler(settings: schedule, context: context, executable: executable, stateDirectory: configuration.stateDirectory,
                                  graceSeconds: grace, serverSettled: { settled.withLock { $0 } })
        }
        let token = context.signals.add { [scheduler] signal in
            guard stopping.setFirstTime() else { return }
            // The jobs first: a restic stopping through the server removes its lock through it, so
            // rclone must outlive them.
            DispatchQueue.global().async {
                if let scheduler {
                    log.info("received \(signalName(signal)): stopping the schedule and its running jobs, then the REST server")
                    scheduler.stopAndWait()
                } else {
                    log.info("received \(signalName(signal)): stopping the REST server")
                }
                current.send(SIGTERM)
                DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(grace)) { current.send(SIGKILL) }
            }
        }
        defer { context.signals.remove(token) }
        scheduler?.start()
        // However the server ends (stopped, or given up), no job of ours is left running.
        defer { scheduler?.stopAndWait() }

        var quickFailures = 0
        var lastReason = ""
        while !context.signals.stopRequested {
            let child: any RunningProcess
            var watched = spec
            watched.standardError = .observe(rcloneLog.observer)
            do {
                child = try context.runner.launch(watched)
            } catch {
                let failure = CloudBackupError.from(error)
                log.error(failure.description)
                return failure.exitCode
            }
            current.set(child)
            if context.signals.stopRequested { child.send(SIGTERM) }
            publish { $0.rclonePID = child.pid; $0.state = .starting }
            let readiness = waitUntilReady(child)
            switch readiness {
            case .ready:
                publish { $0.state = .ready; $0.lastError = nil }
                log.info("REST server ready at http://127.0.0.1:\(configuration.restPort)/ (rclone PID \(child.pid))")
            case .timedOut:
                // Accepting connections and never answering (a hung endpoint) must not hold the
                // server in "starting" forever: count it as a failed start.
                log.warning("rclone did not start serving within SERVER_START_TIMEOUT_SECONDS=\(configuration.serverStartTimeoutSeconds) s (is the destination answering?): stopping it")
                child.send(SIGTERM)
                if waitForExit(child, seconds: Double(grace)) == false { child.send(SIGKILL) }
            case .exited, .stopping:
                break
            }
            settled.withLock { $0 = true }
            let served = readiness == .ready
            let result = child.wait()
            current.set(nil)
            if context.signals.stopRequested { break }

            let rcloneMessages = rcloneLog.text
            lastReason = DestinationInspector.rcloneReason(rcloneMessages) ?? "\(result.status)"
            if readiness == .timedOut {
                lastReason = "rclone did not start serving within \(configuration.serverStartTimeoutSeconds) s" + (DestinationInspector.rcloneReason(rcloneMessages).map { " (its last message: \($0))" } ?? "")
            }
            publish { $0.state = .starting; $0.rclonePID = nil; $0.lastError = lastReason }
            quickFailures = served ? 0 : quickFailures + 1
            if quickFailures >= maxQuickFailures {
                let failure = CloudBackupError.serverFailed(
                    "rclone serve restic failed \(quickFailures) times in a row before it could serve; giving up. Last error: \(lastReason)\nCheck the destination (`rclone lsd \(configuration.destination.rclonePath)`) and that port \(configuration.restPort) is free.")
                log.error(failure.description)
                return failure.exitCode
            }
            let delay = served ? 0 : min(pow(2, Double(quickFailures - 1)), 30) * context.backoffScale
            log.warning("rclone serve restic stopped (\(result.status)): \(lastReason); restarting in \(String(format: "%.1f", delay)) s")
            let end = Date().addingTimeInterval(delay)
            while Date() < end && !context.signals.stopRequested { context.sleep(0.1) }
        }
        log.info("REST server stopped")
        return ExitCode.success
    }

    /// Makes sure the port is ours to take. An `rclone serve restic` of our destination whose
    /// start-server is gone (killed with SIGKILL: rclone, in its own process group, outlives it) is
    /// stopped; another live start-server, or any other program, is reported at once instead of
    /// failing to start five times.
    func claimPort() -> CloudBackupError? {
        let port = configuration.restPort
        guard let owner = PortOwner.find(port: port) else { return nil }
        let servesRestic = owner.name == "rclone" && Array(owner.arguments.dropFirst().prefix(2)) == ["serve", "restic"]
        if servesRestic && owner.parentName == "cloud-backup" {
            return .serverFailed("another `cloud-backup start-server` (PID \(owner.parentPID), with another state directory) already serves port \(port): stop it first, or give this one another RESTIC_REST_PORT.")
        }
        guard servesRestic && owner.arguments.contains(configuration.destination.rclonePath) else {
            return .serverFailed("port \(port) is already in use by \(owner.name) (PID \(owner.pid)): stop it, or set RESTIC_REST_PORT to a free port.")
        }
        log.warning("rclone serve restic (PID \(owner.pid)) left behind by a start-server that was killed still holds port \(port): stopping it")
        // Not our child: its PID could be recycled between the /proc look-up and the signal, so the
        // signal goes through a pidfd, after checking it is still that rclone.
        let stillTheOrphan: (pid_t) -> Bool = { PortOwner.processName($0) == "rclone" && PortOwner.commandLine($0) == owner.arguments }
        signalProcess(owner.pid, SIGTERM, stillMatches: stillTheOrphan)
        let end = Date().addingTimeInterval(5)
        while stillTheOrphan(owner.pid) && PortOwner.find(port: port) != nil {
            if Date() > end {
                signalProcess(owner.pid, SIGKILL, stillMatches: stillTheOrphan)
                break
            }
            context.sleep(0.05)
        }
        return nil
    }

    enum Readiness: Equatable { case ready, exited, stopping, timedOut }

    /// Polls the port until rclone answers like a restic REST server, dies, or the time is up.
    private func waitUntilReady(_ child: any RunningProcess) -> Readiness {
        let end = Date().addingTimeInterval(Double(configuration.serverStartTimeoutSeconds))
        while Date() < end {
            if context.signals.stopRequested { return .stopping }
            if child.hasExited { return .exited }
            switch RestServerProbe.probe(port: configuration.restPort, credentials: configuration.restCredentials, timeout: 1) {
            case .restServer: return .ready
            case .refusedCredentials, .otherService, .nothing: break
            }
            context.sleep(0.1)
        }
        return .timedOut
    }

    /// Waits for `child` to exit, at most `seconds`; false if it is still running.
    private func waitForExit(_ child: any RunningProcess, seconds: Double) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while !child.hasExited {
            if Date() > end { return false }
            context.sleep(0.05)
        }
        return true
    }

    /// One start-server per state directory: jobs read this server's record there.
    func claimStateDirectory() -> Result<FileLock, CloudBackupError> {
        let state = configuration.stateDirectory
        do {
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            return .failure(.cannotWrite(path: state, reason: describe(error)))
        }
        let path = ServerRecord.lockPath(stateDirectory: state)
        switch FileLock.acquire(path) {
        case .success(let lock):
            return .success(lock)
        case .failure(.cannotOpen(let code)):
            return .failure(.cannotWrite(path: path, reason: String(cString: strerror(code))))
        case .failure(.busy):
            let (record, _) = ServerRecord.read(stateDirectory: state)
            guard let record else {
                return .failure(.serverFailed("another `cloud-backup start-server` already runs with the state directory \(state) (it holds \(path)): stop it first."))
            }
            return .failure(.serverFailed("another `cloud-backup start-server` (\(record.whereabouts)) already serves port \(record.port) with the state directory \(state), serving \(record.destination): stop it first (one server per state directory), or give this one another CLOUD_BACKUP_STATE_DIR."))
        }
    }

    /// `server-status`: one line and exit 0 when this state directory's REST server is ready and
    /// answers on loopback, 1 otherwise. Cheap enough for a container HEALTHCHECK (no ping, no restic).
    public static func reportStatus(configuration: Configuration) -> Int32 {
        let port = configuration.restPort
        let answer = RestServerProbe.probe(port: port, credentials: configuration.restCredentials)
        let (record, alive) = ServerRecord.read(stateDirectory: configuration.stateDirectory)
        switch answer {
        case .restServer:
            switch ServerIdentity.check(port: port, destination: configuration.destination.rclonePath, stateDirectory: configuration.stateDirectory) {
            case .ours(let record):
                print("REST server ready on 127.0.0.1:\(port): start-server \(record.whereabouts), rclone PID \(record.rclonePID.map(String.init) ?? "?"), serving \(record.destination)")
                return ExitCode.success
            case .notOurs(let reason):
                print("a restic REST server answers on 127.0.0.1:\(port), but \(reason); jobs go to the destination directly")
            }
        case .refusedCredentials:
            print("a server on 127.0.0.1:\(port) refuses RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD")
        case .otherService(let status):
            print("something that is not a restic REST server answers on 127.0.0.1:\(port) (HTTP \(status))")
        case .nothing:
            if alive, let record {
                print("start-server is running (\(record.whereabouts)) but the REST server is not ready on 127.0.0.1:\(port)\(record.lastError.map { ": \($0)" } ?? "")")
            } else {
                print("no REST server answers on 127.0.0.1:\(port)")
            }
        }
        return ExitCode.failure
    }
}

/// The rclone process of the moment, for the signal handler.
final class CurrentChild: @unchecked Sendable {
    private let lock = NSLock()
    private var child: (any RunningProcess)?
    func set(_ child: (any RunningProcess)?) {
        lock.lock(); self.child = child; lock.unlock()
    }
    func send(_ signal: Int32) {
        lock.lock(); let child = self.child; lock.unlock()
        child?.send(signal)
    }
}
