import Foundation

/// The ping endpoints of one check (docs/design.md#healthchecks).
public enum PingKind: Sendable, Equatable {
    case start
    case exitStatus(Int32)
}

public enum PingURL {
    /// `<check>/start?rid=…`, `<check>/<code>?rid=…`: the suffix goes on the path, and the check's own
    /// query (`?create=1` on slug URLs) is kept.
    public static func make(check: URL, kind: PingKind, runID: String) -> URL? {
        guard var components = URLComponents(url: check, resolvingAgainstBaseURL: false) else { return nil }
        var path = components.path
        while path.hasSuffix("/") { path.removeLast() }
        switch kind {
        case .start: path += "/start"
        // Healthchecks accepts 0–255; anything else would be HTTP 400 and a lost ping.
        case .exitStatus(let code): path += "/\(code >= 0 && code <= 255 ? code : 1)"
        }
        components.path = path
        var items = (components.queryItems ?? []).filter { $0.name != "rid" }
        items.append(URLQueryItem(name: "rid", value: runID))
        components.queryItems = items
        return components.url
    }

    /// For log lines: the whole authority (scheme, user, host, port: a warning must tell which server
    /// failed, and two Healthchecks on one host differ only by port), never the path or query (whoever
    /// holds them can ping the check) nor a password in the URL.
    public static func redacted(_ url: URL) -> String {
        guard let components = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return "(a ping URL)" }
        var authority = ""
        if let user = components.percentEncodedUser {
            authority += components.percentEncodedPassword == nil ? "\(user)@" : "\(user):***@"
        }
        let host = components.percentEncodedHost ?? "?"
        // An IPv6 literal keeps its brackets, or its colons would read as a port.
        authority += host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        if let port = components.port { authority += ":\(port)" }
        return "\(components.scheme ?? "https")://\(authority)/…"
    }
}

public enum PingBody {
    public static let defaultLimit = 100_000
    /// Ends a summary that had to be cut, so nobody takes the rest for the whole message.
    public static let summaryCutMarker = "…"

    /// The summary first (it must survive any cut), then as much of the output's end as fits, in at
    /// most `limit` bytes of UTF-8: Healthchecks cuts longer bodies itself without a word, and a cut
    /// there (or here, inside a character) loses the end of the summary. Secrets are replaced by `***`
    /// before anything else.
    public static func make(summary: String, output: String, limit: Int, secrets: [String]) -> String {
        let summary = Redactor.redact(summary, secrets: secrets)
        let output = Redactor.redact(output, secrets: secrets).trimmingCharacters(in: .newlines)
        let head = output.isEmpty ? summary : summary + "\n\n--- end of the output ---\n"
        let body = head + output
        guard body.utf8.count > limit else { return body }
        guard summary.utf8.count <= limit else { return cut(summary, toBytes: limit) }
        let marker = "[… earlier output cut to fit the \(limit)-byte ping limit …]\n"
        let room = limit - head.utf8.count - marker.utf8.count
        // No room for any output: the whole summary alone is worth more than a marker.
        guard room > 0 else { return summary }
        var tail = Array(output.utf8.suffix(room))
        // Start on a line (and so on a whole UTF-8 character).
        if let newline = tail.firstIndex(of: 10) { tail = Array(tail[(newline + 1)...]) }
        while let first = tail.first, first & 0xC0 == 0x80 { tail.removeFirst() }
        return head + marker + String(decoding: tail, as: UTF8.self)
    }

    /// The longest start of `text` that, with the cut marker after it, fits in `limit` bytes; cut
    /// between characters (a byte cut inside one would be decoded as U+FFFD, 3 bytes, and grow the
    /// body). Below the marker's own size nothing fits: an empty body, rather than a few bytes that
    /// would look like a whole message.
    static func cut(_ text: String, toBytes limit: Int) -> String {
        let room = limit - summaryCutMarker.utf8.count
        guard room >= 0 else { return "" }
        var kept = ""
        var used = 0
        for character in text {
            let size = character.utf8.count
            if used + size > room { break }
            kept.append(character)
            used += size
        }
        return kept + summaryCutMarker
    }
}

/// Sends one HTTP request and gives back the status and the headers we read. A closure, so tests can
/// count requests; the real one is URLSession (`HTTPClient`), bounded by the timeout it is given.
public struct HTTPTransport: Sendable {
    public struct Response: Sendable { public var status: Int; public var headers: [String: String] }
    public var send: @Sendable (_ url: URL, _ body: Data?, _ timeout: Double) throws -> Response

    public init(send: @escaping @Sendable (_ url: URL, _ body: Data?, _ timeout: Double) throws -> Response) {
        self.send = send
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        /// The server's certificate was not trusted, or `CLOUD_BACKUP_CA_FILE` could not be used.
        public var isTLS: Bool

        public init(description: String, isTLS: Bool = false) {
            self.description = description
            self.isTLS = isTLS
        }
    }

    /// GET without a body, POST with one, through URLSession; HTTPS trusts the system's CAs and
    /// `trust.caFile`.
    public static func urlSession(trust: TLSTrust = .processDefault) -> HTTPTransport {
        HTTPTransport { url, body, timeout in
            let answer = try HTTPClient.exchange(url: url, body: body, timeout: timeout, trust: trust)
            return Response(status: answer.status, headers: answer.pingBodyLimit.isEmpty ? [:] : ["ping-body-limit": answer.pingBodyLimit])
        }
    }
}

/// Pings one check for one job run. A failing ping prints a warning and never changes the job's result;
/// each ping costs at most `budgetSeconds` (requests of at most 10 s, retried after 1, 2, 4 s).
public final class HealthchecksMonitor: Sendable {
    public let check: URL?
    public let runID: String
    private let transport: HTTPTransport
    private let secrets: [String]
    private let log: Logger
    private let requestTimeout: Double
    private let budgetSeconds: Double
    private let retryDelays: [Double]
    /// Said in the start ping's body (and the log): the built-in schedule's word that a run of this
    /// job was not started twice (Scheduler.noteVariable).
    private let startNote: String?
    /// The largest ping body the server takes: its `Ping-Body-Limit` answer to `start`, else the default.
    /// Written by `start` and read by `finish`, which may run on other threads.
    public var bodyLimit: Int { bodyLimitAnswer.withLock { $0 } }
    private let bodyLimitAnswer = Locked(PingBody.defaultLimit)

    public init(check: URL?, transport: HTTPTransport = .urlSession(), secrets: [String], log: Logger,
                requestTimeout: Double = 10, budgetSeconds: Double = 35, retryDelays: [Double] = [1, 2, 4], startNote: String? = nil) {
        self.check = check
        self.startNote = startNote
        self.runID = UUID().uuidString.lowercased()
        self.transport = transport
        self.secrets = secrets
        self.log = log
        self.requestTimeout = requestTimeout
        self.budgetSeconds = budgetSeconds
        self.retryDelays = retryDelays
    }

    public func start() {
        if let startNote { log.warning(startNote) }
        guard let check else { return }
        let body = startNote.map { Data(Redactor.redact($0, secrets: secrets).utf8) }
        if let response = send(check: check, kind: .start, body: body),
           let limit = response.headers["ping-body-limit"].flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }), limit > 0 {
            bodyLimitAnswer.withLock { $0 = limit }
        }
    }

    public func finish(exitCode: Int32, summary: String, output: String) {
        guard let check else { return }
        let body = PingBody.make(summary: summary, output: output, limit: bodyLimit, secrets: secrets)
        _ = send(check: check, kind: .exitStatus(exitCode), body: Data(body.utf8))
    }

    private func send(check: URL, kind: PingKind, body: Data?) -> HTTPTransport.Response? {
        guard let url = PingURL.make(check: check, kind: kind, runID: runID) else { return nil }
        let deadline = Date().addingTimeInterval(budgetSeconds)
        var attempt = 0
        var lastProblem = ""
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining < 0.5 { break }
            do {
                let response = try transport.send(url, body, min(requestTimeout, remaining - 0.25))
                if (200..<300).contains(response.status) { return response }
                lastProblem = "HTTP \(response.status)"
                // A 4xx will not get better by asking again (except rate limiting).
                if (400..<500).contains(response.status) && response.status != 429 { break }
            } catch {
                lastProblem = Redactor.redact("\(error)", secrets: secrets)
            }
            guard attempt < retryDelays.count else { break }
            let delay = retryDelays[attempt]
            attempt += 1
            if deadline.timeIntervalSinceNow - delay < 0.5 { break }
            Thread.sleep(forTimeInterval: delay)
        }
        log.warning("could not ping Healthchecks at \(PingURL.redacted(check)) (\(lastProblem)); the job's result is not affected.")
        return nil
    }
}
