import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The tool's own lines, on stderr (stdout is restic's), each starting with `cloud-backup:` so they
/// stand out in ofelia's and Docker's logs. Every line passes through the redactor.
public final class Logger: @unchecked Sendable {
    private let lock = NSLock()
    private var secrets: [String]
    private let sink: @Sendable (String) -> Void

    public init(secrets: [String] = [], sink: @escaping @Sendable (String) -> Void = Logger.standardError) {
        self.secrets = secrets
        self.sink = sink
    }

    public static let standardError: @Sendable (String) -> Void = { line in
        var text = line
        text.withUTF8 { writeFully(STDERR_FILENO, $0.baseAddress!, $0.count) }
    }

    public func addSecrets(_ more: [String]) {
        lock.lock()
        secrets += more
        lock.unlock()
    }

    public func info(_ message: String) { emit("cloud-backup: \(message)") }
    public func warning(_ message: String) { emit("cloud-backup: warning: \(message)") }
    public func error(_ message: String) { emit("cloud-backup: error: \(message)") }

    private func emit(_ line: String) {
        lock.lock()
        let current = secrets
        lock.unlock()
        sink(Redactor.redact(line, secrets: current) + "\n")
    }
}
