import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `start-server`: `rclone serve restic` on the destination, in the foreground, kept alive.
/// rclone is restarted when it dies. A death before it ever answered is a failure to start (port
/// taken, remote refusing): those back off (1, 2, 4 … 30 s) and after `maxQuickFailures` in a row the
/// server gives up and exits non-zero, so Docker's restart policy (or the admin) takes over. A death
/// after it served is a crash: restarted at once, the count starts over. SIGTERM/SIGINT stop rclone
/// and end the command within the grace period.
public struct RestServer {
    public let configuration: Configuration
    public let context: JobContext
    public var maxQuickFailures = 5
    public var readinessTimeoutSeconds: Double = 60

    public init(configuration: Configuration, context: JobContext) {
        self.configuration = configuration
        self.context = context
        if let value = context.environment["CLOUD_BACKUP_SERVER_MAX_QUICK_FAILURES"].flatMap(Int.init), value > 0 {
            maxQuickFailures = value
        }
    }

    private var log: Logger { context.log }

    public func run() -> Int32 {
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
        do {
            try InfnSetup.prepare(configuration, context: context)
        } catch {
            let failure = CloudBackupError.from(error)
            log.error(failure.description)
            return failure.exitCode
        }
        if let problem = claimPort() {
            log.error(problem.description)
            return problem.exitCode
        }
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

        let current = CurrentChild()
        let stopping = OnceFlag()
        let grace = configuration.stopGraceSeconds
        let log = self.log
        let token = context.signals.add { signal in
            guard stopping.setFirstTime() else { return }
            log.info("received \(signalName(signal)): stopping the REST server")
            current.send(SIGTERM)
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(grace)) { current.send(SIGKILL) }
        }
        defer { context.signals.remove(token) }

        var quickFailures = 0
        var lastReason = ""
        while !context.signals.stopRequested {
            let child: any RunningProcess
            do {
                child = try context.runner.launch(spec)
            } catch {
                let failure = CloudBackupError.from(error)
                log.error(failure.description)
                return failure.exitCode
            }
            current.set(child)
            if context.signals.stopRequested { child.send(SIGTERM) }
            let served = waitUntilReady(child)
            if served {
                log.info("REST server ready at http://127.0.0.1:\(configuration.restPort)/ (rclone PID \(child.pid))")
            }
            let result = child.wait()
            current.set(nil)
            if context.signals.stopRequested { break }

            lastReason = DestinationInspector.rcloneReason(result.standardError) ?? "\(result.status)"
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
            return .serverFailed("another `cloud-backup start-server` (PID \(owner.parentPID)) already serves port \(port): stop it first, or give this one another RESTIC_REST_PORT.")
        }
        guard servesRestic && owner.arguments.contains(configuration.destination.rclonePath) else {
            return .serverFailed("port \(port) is already in use by \(owner.name) (PID \(owner.pid)): stop it, or set RESTIC_REST_PORT to a free port.")
        }
        log.warning("rclone serve restic (PID \(owner.pid)) left behind by a start-server that was killed still holds port \(port): stopping it")
        kill(owner.pid, SIGTERM)
        let end = Date().addingTimeInterval(5)
        while kill(owner.pid, 0) == 0 && PortOwner.find(port: port) != nil {
            if Date() > end {
                kill(owner.pid, SIGKILL)
                break
            }
            context.sleep(0.05)
        }
        return nil
    }

    /// `server-status`: one line and exit 0 when the REST server answers on loopback, 1 otherwise.
    /// Cheap enough for a container HEALTHCHECK (no ping, no restic run).
    public static func reportStatus(configuration: Configuration) -> Int32 {
        let port = configuration.restPort
        let answer = RestServerProbe.probe(port: port, credentials: configuration.restCredentials)
        switch answer {
        case .restServer:
            print("REST server answering on 127.0.0.1:\(port)")
            return ExitCode.success
        case .refusedCredentials:
            print("a server on 127.0.0.1:\(port) refuses RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD")
        case .otherService(let status):
            print("something that is not a restic REST server answers on 127.0.0.1:\(port) (HTTP \(status))")
        case .nothing:
            print("no REST server answers on 127.0.0.1:\(port)")
        }
        return ExitCode.failure
    }

    /// Polls the port until rclone answers like a restic REST server, or the process dies.
    private func waitUntilReady(_ child: any RunningProcess) -> Bool {
        let end = Date().addingTimeInterval(readinessTimeoutSeconds)
        while Date() < end {
            if child.hasExited || context.signals.stopRequested { return false }
            switch RestServerProbe.probe(port: configuration.restPort, credentials: configuration.restCredentials, timeout: 1) {
            case .restServer: return true
            case .refusedCredentials, .otherService, .nothing: break
            }
            context.sleep(0.1)
        }
        log.warning("rclone has not answered on port \(configuration.restPort) after \(Int(readinessTimeoutSeconds)) s; still waiting")
        return false
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
