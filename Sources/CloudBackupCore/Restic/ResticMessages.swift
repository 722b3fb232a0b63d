import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// restic's error lines as a person reads them in a log or a ping body: JSON error objects and
/// `exit_error` lines (restic 0.17+ with --json) become sentences, terminal control sequences go.
public enum ResticMessages {
    /// One line of restic's output, fit for a log: nil when nothing is left to show.
    public static func readable(_ line: Substring) -> String? {
        let text = stripTerminalControls(String(line))
        guard text.hasPrefix("{"), let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let type = object["message_type"] as? String else {
            return text.trimmingCharacters(in: .whitespaces).isEmpty ? nil : text
        }
        switch type {
        case "error":
            return "error: " + describeError(object)
        case "exit_error":
            // {"message_type":"exit_error","code":1,"message":"Fatal: wrong password or no key found"}
            let message = object["message"] as? String ?? "restic failed"
            return message.hasPrefix("Fatal: ") ? message : "Fatal: \(message)"
        default:
            return text
        }
    }

    /// `{"error":{"Op":"open","Path":"data/x","Err":13},"during":"archival","item":"/srv/data/x"}` →
    /// "permission denied: /srv/data/x (open, during archival)".
    static func describeError(_ object: [String: Any]) -> String {
        let item = object["item"] as? String ?? ""
        let during = object["during"] as? String ?? ""
        var reason = "an error"
        var operation = ""
        var path = item
        if let error = object["error"] as? [String: Any] {
            if let message = error["message"] as? String, !message.isEmpty {
                // 0.17+: "open /data/x: permission denied" → "permission denied: /data/x (open, during archival)"
                if let parsed = operationError(message) {
                    reason = parsed.reason
                    operation = parsed.operation
                    if path.isEmpty { path = parsed.path }
                } else if !item.isEmpty && message.contains(item) {
                    return message + (during.isEmpty ? "" : " (during \(during))")
                } else {
                    reason = message
                }
            } else if let code = (error["Err"] as? NSNumber)?.int32Value {
                reason = String(cString: strerror(code))
                reason = reason.prefix(1).lowercased() + reason.dropFirst()
            }
            if operation.isEmpty { operation = error["Op"] as? String ?? "" }
            if path.isEmpty { path = error["Path"] as? String ?? "" }
        } else if let message = object["error"] as? String {
            reason = message
        }
        let context = [operation, during.isEmpty ? "" : "during \(during)"].filter { !$0.isEmpty }.joined(separator: ", ")
        return path.isEmpty ? reason : "\(reason): \(path)\(context.isEmpty ? "" : " (\(context))")"
    }

    /// "open /srv/x: permission denied" → (open, /srv/x, permission denied), for the system calls restic names.
    static func operationError(_ text: Substring) -> (operation: String, path: String, reason: String)? {
        let words = text.split(separator: " ", maxSplits: 1)
        guard words.count == 2, fileOperations.contains(String(words[0])),
              let colon = words[1].range(of: ": ", options: .backwards) else { return nil }
        return (String(words[0]), String(words[1][..<colon.lowerBound]), String(words[1][colon.upperBound...]))
    }

    static func operationError(_ text: String) -> (operation: String, path: String, reason: String)? {
        operationError(Substring(text))
    }

    /// Removes ANSI/VT100 control sequences (`ESC[2K`, `ESC[1A`, …) and carriage returns.
    public static func stripTerminalControls(_ text: String) -> String {
        guard text.contains("\u{1B}") || text.contains("\r") else { return text }
        var result = ""
        var iterator = text.unicodeScalars.makeIterator()
        while let scalar = iterator.next() {
            if scalar == "\u{1B}" {
                // CSI: ESC [ parameters… final byte in @…~
                guard let next = iterator.next() else { break }
                if next == "[" {
                    while let byte = iterator.next(), !(0x40...0x7E).contains(byte.value) {}
                }
                continue
            }
            if scalar == "\r" { continue }
            result.unicodeScalars.append(scalar)
        }
        return result
    }

    /// The system calls restic names in its text error lines.
    static let fileOperations: Set<String> = ["open", "lstat", "stat", "fstat", "read", "readdir", "readdirnames", "readlink",
                                              "getxattr", "listxattr", "llistxattr", "lgetxattr", "close", "seek"]

    /// The files restic could not read (exit 3), from its text (`error: open /x: permission denied`)
    /// or JSON error lines, as "permission denied: /x". At most `limit`, plus how many more.
    public static func unreadableFiles(in output: String, limit: Int = 5) -> (files: [String], more: Int) {
        var found: [String] = []
        for line in output.split(separator: "\n") {
            let text = stripTerminalControls(String(line)).trimmingCharacters(in: .whitespaces)
            if text.hasPrefix("{"), let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
               object["message_type"] as? String == "error" {
                found.append(describeError(object))
            } else if text.hasPrefix("error: ") {
                let body = text.dropFirst("error: ".count)
                // restic's text: "error: open /srv/x: permission denied" → "permission denied: /srv/x (open)";
                // anything else (our own sentences, "permission denied: /srv/x (open, …)") as it is.
                if let parsed = operationError(body) {
                    found.append("\(parsed.reason): \(parsed.path) (\(parsed.operation))")
                } else {
                    found.append(String(body))
                }
            }
        }
        return (Array(found.prefix(limit)), max(0, found.count - limit))
    }
}

/// restic's words for "no repository here" (0.14: `Fatal: unable to open config file: …`, then
/// `Is there a repository at the following location?` and the location; 0.17+ with `repository does
/// not exist`). The job says it better itself ("no repository at … yet: creating it", or "run a backup
/// first"), so these lines are kept for the outcome but not shown.
final class MissingRepositoryLines: Sendable {
    private let hideNext = Locked(false)

    func shouldShow(_ line: String) -> Bool {
        hideNext.withLock { hideNext in
            if hideNext {
                hideNext = false
                return false
            }
            if line.contains("Is there a repository at the following location?") {
                hideNext = true
                return false
            }
            return !(line.contains("unable to open config file") || line.contains("repository does not exist"))
        }
    }
}

/// Shows a child's lines (made readable for a log, or as they are for a terminal) and keeps the end
/// of them as restic wrote them, for the outcome.
final class ReadableLog: Sendable {
    private let kept = Locked(BoundedBuffer(limit: 64 * 1024, keep: .tail))
    private let write: @Sendable (String) -> Void
    private let readable: Bool
    private let missing = MissingRepositoryLines()

    /// `readable`: as sentences without terminal control sequences (logs); otherwise as restic wrote
    /// them (a terminal, where its control sequences draw the progress line).
    init(readable: Bool = true, write: @escaping @Sendable (String) -> Void) {
        self.readable = readable
        self.write = write
    }

    var observer: LineObserver {
        LineObserver { [weak self] line in
            guard let self else { return }
            let shown = self.readable ? ResticMessages.readable(line) : String(line)
            self.kept.withLock { $0.append((shown ?? String(line)) + "\n") }
            if let shown, self.missing.shouldShow(shown) { self.write(shown + "\n") }
        }
    }

    var text: String { kept.withLock { $0.text } }
}
