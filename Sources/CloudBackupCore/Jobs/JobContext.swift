import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Everything a command touches outside itself, passed in as a value so tests can replace any part.
public struct JobContext: Sendable {
    public var environment: [String: String]
    public var runner: any ProcessRunning
    public var signals: SignalMonitor
    public var log: Logger
    public var transport: HTTPTransport
    public var hostName: String
    public var sleep: @Sendable (Double) -> Void
    /// Short waits for tests (lock retries, restart backoff), scaled from the real ones.
    public var backoffScale: Double
    /// Whether our stdout is a terminal (restic then draws its own progress).
    public var stdoutIsTerminal: Bool
    /// Which restic reads a backup's files (the image's capability-bearing one, when it can run).
    public var readAccess: ReadAccess

    public init(environment: [String: String], runner: any ProcessRunning = SystemProcessRunner(),
                signals: SignalMonitor = .shared, log: Logger = Logger(), transport: HTTPTransport? = nil,
                hostName: String = currentHostName(), sleep: @escaping @Sendable (Double) -> Void = { Thread.sleep(forTimeInterval: $0) },
                backoffScale: Double = 1, stdoutIsTerminal: Bool = isatty(STDOUT_FILENO) == 1,
                readAccess: ReadAccess = .detect()) {
        self.environment = environment
        self.runner = runner
        self.signals = signals
        self.log = log
        // Pings trust the system's CAs and the job's CLOUD_BACKUP_CA_FILE (TLSTrust).
        self.transport = transport ?? .urlSession(trust: TLSTrust(environment: environment))
        self.hostName = hostName
        self.sleep = sleep
        self.backoffScale = backoffScale
        self.stdoutIsTerminal = stdoutIsTerminal
        self.readAccess = readAccess
    }
}

extension HealthchecksMonitor {
    /// A job's monitor: the configured timeouts and secrets, the context's transport and log.
    public convenience init(check: URL?, configuration: Configuration, context: JobContext) {
        self.init(check: check, transport: context.transport, secrets: configuration.secrets, log: context.log,
                  requestTimeout: Double(configuration.pingTimeoutSeconds), budgetSeconds: configuration.pingBudgetSeconds,
                  startNote: context.environment[Scheduler.noteVariable].flatMap { $0.isEmpty ? nil : "note from the schedule: \($0)" })
    }
}

public func currentHostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count) == 0 else { return "" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Docker's default hostname is the first 12 hex digits of the container id: a new one per container,
/// so snapshots would each get a different host.
public func looksLikeContainerID(_ hostName: String) -> Bool {
    (hostName.count == 12 || hostName.count == 64) && hostName.allSatisfy { $0.isHexDigit && !$0.isUppercase }
}
