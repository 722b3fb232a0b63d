import XCTest
@testable import CloudBackupCore

final class PingURLTests: XCTestCase {
    let rid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

    func url(_ check: String, _ kind: PingKind) -> String? {
        PingURL.make(check: URL(string: check)!, kind: kind, runID: rid)?.absoluteString
    }

    func testUUIDURLsOnAnyHost() {
        XCTAssertEqual(url("https://hc-ping.com/0f2d5c1e-aaaa-bbbb-cccc-123456789abc", .start),
                       "https://hc-ping.com/0f2d5c1e-aaaa-bbbb-cccc-123456789abc/start?rid=\(rid)")
        XCTAssertEqual(url("https://hc.cloud.infn.it/ping/0f2d5c1e-aaaa-bbbb-cccc-123456789abc/", .exitStatus(0)),
                       "https://hc.cloud.infn.it/ping/0f2d5c1e-aaaa-bbbb-cccc-123456789abc/0?rid=\(rid)")
        XCTAssertEqual(url("http://127.0.0.1:8000/ping/abc", .exitStatus(3)), "http://127.0.0.1:8000/ping/abc/3?rid=\(rid)")
    }

    func testSlugURLsKeepTheirQuery() {
        XCTAssertEqual(url("https://hc-ping.com/fqOOd6-F4MMNuCEnzTU01w/db-backup?create=1", .start),
                       "https://hc-ping.com/fqOOd6-F4MMNuCEnzTU01w/db-backup/start?create=1&rid=\(rid)")
        XCTAssertEqual(url("https://hc-ping.com/k/slug?create=1&rid=old", .exitStatus(1)),
                       "https://hc-ping.com/k/slug/1?create=1&rid=\(rid)")
    }

    func testExitCodesOutsideTheAcceptedRangeBecomeFailures() {
        XCTAssertEqual(url("https://hc-ping.com/u", .exitStatus(300)), "https://hc-ping.com/u/1?rid=\(rid)")
        XCTAssertEqual(url("https://hc-ping.com/u", .exitStatus(-1)), "https://hc-ping.com/u/1?rid=\(rid)")
        XCTAssertEqual(url("https://hc-ping.com/u", .exitStatus(255)), "https://hc-ping.com/u/255?rid=\(rid)")
    }

    func testLogsShowOnlyTheHost() {
        XCTAssertEqual(PingURL.redacted(URL(string: "https://hc-ping.com/0f2d5c1e")!), "https://hc-ping.com/…")
    }

    /// Failed on the old code: the port was dropped ("http://127.0.0.1/…"), so two Healthchecks on one host looked alike.
    func testLogsShowTheWholeAuthorityWithoutSecrets() {
        XCTAssertEqual(PingURL.redacted(URL(string: "http://127.0.0.1:8000/ping/0f2d5c1e?create=1")!), "http://127.0.0.1:8000/…")
        XCTAssertEqual(PingURL.redacted(URL(string: "https://hc.example.org:8443/ping/k/slug")!), "https://hc.example.org:8443/…")
        XCTAssertEqual(PingURL.redacted(URL(string: "http://[::1]:8000/ping/abc")!), "http://[::1]:8000/…")
        let withPassword = PingURL.redacted(URL(string: "https://monitor:s3cret-pass@hc.example.org:8443/ping/abc")!)
        XCTAssertEqual(withPassword, "https://monitor:***@hc.example.org:8443/…")
        XCTAssertFalse(withPassword.contains("s3cret"))
    }
}

final class PingBodyTests: XCTestCase {
    func testShortBodiesAreWhole() {
        XCTAssertEqual(PingBody.make(summary: "ok", output: "line1\nline2\n", limit: 1000, secrets: []),
                       "ok\n\n--- end of the output ---\nline1\nline2")
        XCTAssertEqual(PingBody.make(summary: "ok", output: "", limit: 1000, secrets: []), "ok")
    }

    func testLongBodiesKeepTheSummaryAndTheEnd() {
        let output = (1...5000).map { "line \($0) ü" }.joined(separator: "\n")
        let body = PingBody.make(summary: "backup failed: disk on fire", output: output, limit: 2000, secrets: [])
        XCTAssertLessThanOrEqual(body.utf8.count, 2000)
        XCTAssertTrue(body.hasPrefix("backup failed: disk on fire\n"))
        XCTAssertTrue(body.contains("[… earlier output cut to fit the 2000-byte ping limit …]"))
        XCTAssertTrue(body.hasSuffix("line 5000 ü"))
        XCTAssertFalse(body.contains("line 1 ü\n"))
    }

    func testSummaryAloneIsCutWhenTheLimitIsTiny() {
        XCTAssertEqual(PingBody.make(summary: String(repeating: "x", count: 100), output: "y", limit: 10, secrets: []), "xxxxxxx…")
    }

    /// Failed on the old code: a cut inside a multi-byte character became U+FFFD (3 bytes) and the
    /// body grew past the limit, and a cut summary had no marker.
    func testBodiesNeverExceedTheLimitWithMultiByteSummaries() {
        let summaries = ["backup failed: Zugriff verweigert für /home/jürgen/Übersicht — ärgerlich",
                         "€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€", "😀x😀x😀x😀x😀x😀x😀x😀x😀x😀", "sauvegarde échouée: é\u{301}é\u{301}é\u{301}é\u{301}"]
        let outputs = ["", "line ü 1\nline ü 2\n", (1...200).map { "zeile \($0) — ökonomisch" }.joined(separator: "\n")]
        for summary in summaries {
            for output in outputs {
                for limit in [0, 1, 2, 3, 4, 5, 10, 11, 37, 38, 39, 40, 64, 100, 150, 2000] {
                    let body = PingBody.make(summary: summary, output: output, limit: limit, secrets: [])
                    let context = "limit \(limit), summary «\(summary)», output of \(output.utf8.count) bytes: «\(body)»"
                    XCTAssertLessThanOrEqual(body.utf8.count, limit, context)
                    XCTAssertFalse(body.contains("\u{FFFD}"), context)
                    if summary.utf8.count > limit {
                        XCTAssertTrue(body.isEmpty || body.hasSuffix(PingBody.summaryCutMarker), "a cut summary ends with the marker: \(context)")
                        XCTAssertTrue(summary.hasPrefix(String(body.dropLast())), context)
                    } else {
                        XCTAssertTrue(body.hasPrefix(summary), "a summary that fits is whole: \(context)")
                    }
                }
            }
        }
    }

    func testTinyLimits() {
        let summary = "backup failed: jürgen's Übersicht"  // "ü" at bytes 16–17
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 1, secrets: []), "", "not even the marker fits")
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 3, secrets: []), "…")
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 10, secrets: []), "backup …")
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 20, secrets: []), "backup failed: j…", "the cut does not split ü")
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 21, secrets: []), "backup failed: jü…")
        XCTAssertEqual(PingBody.make(summary: summary, output: "tail", limit: 37, secrets: []), summary, "the summary alone when the output has no room")
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 35, secrets: []), summary, "35 bytes: fits exactly")
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 34, secrets: []), "backup failed: jürgen's Übers…")
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 30, secrets: []), "backup failed: jürgen's Ü…")
        XCTAssertEqual(PingBody.make(summary: summary, output: "", limit: 29, secrets: []), "backup failed: jürgen's …", "Ü does not fit whole")
    }

    func testSecretsAreRedacted() {
        let body = PingBody.make(summary: "pw hunter22 used", output: "rest:http://u:p%40ss%3Aword@127.0.0.1/ hunter22", limit: 1000,
                                 secrets: ["hunter22", "p@ss:word"])
        XCTAssertFalse(body.contains("hunter22"))
        XCTAssertFalse(body.contains("p%40ss%3Aword"))
        XCTAssertTrue(body.contains("u:***@127.0.0.1"))
    }
}

final class HealthchecksMonitorTests: XCTestCase {
    final class Recorder: @unchecked Sendable {
        let lock = NSLock()
        var requests: [(url: URL, body: String?)] = []
        func add(_ url: URL, _ body: Data?) {
            lock.lock(); requests.append((url, body.map { String(decoding: $0, as: UTF8.self) })); lock.unlock()
        }
    }

    func testStartThenExitCodeWithTheAnnouncedBodyLimit() {
        let recorder = Recorder()
        let transport = HTTPTransport { url, body, _ in
            recorder.add(url, body)
            return .init(status: 200, headers: ["ping-body-limit": "50"])
        }
        let monitor = HealthchecksMonitor(check: URL(string: "https://hc.example/abc")!, transport: transport, secrets: [], log: Logger(sink: { _ in }))
        monitor.start()
        monitor.finish(exitCode: 0, summary: "done", output: String(repeating: "z\n", count: 100))
        XCTAssertEqual(recorder.requests.count, 2)
        XCTAssertEqual(recorder.requests[0].url.path, "/abc/start")
        XCTAssertNil(recorder.requests[0].body)
        XCTAssertEqual(recorder.requests[1].url.path, "/abc/0")
        XCTAssertEqual(recorder.requests[0].url.query, recorder.requests[1].url.query, "the same rid pairs start and end")
        XCTAssertLessThanOrEqual(recorder.requests[1].body!.utf8.count, 50)
        XCTAssertEqual(monitor.bodyLimit, 50)
    }

    func testFailuresAreRetriedWithinTheBudgetAndOnlyWarn() {
        let recorder = Recorder()
        let transport = HTTPTransport { url, body, _ in
            recorder.add(url, body)
            throw HTTPTransport.Failure(description: "Couldn't connect to server")
        }
        let warnings = Recorder()
        let log = Logger(sink: { warnings.add(URL(string: "x:")!, Data($0.utf8)) })
        let monitor = HealthchecksMonitor(check: URL(string: "https://hc.example/abc")!, transport: transport, secrets: [], log: log,
                                          requestTimeout: 1, budgetSeconds: 2, retryDelays: [0.1, 0.2, 0.4])
        let started = Date()
        monitor.start()
        XCTAssertLessThan(Date().timeIntervalSince(started), 2.5)
        XCTAssertEqual(recorder.requests.count, 4, "one try and three retries")
        XCTAssertEqual(monitor.bodyLimit, PingBody.defaultLimit)
        XCTAssertTrue(warnings.requests.last!.body!.contains("could not ping Healthchecks at https://hc.example/…"))
        XCTAssertFalse(warnings.requests.last!.body!.contains("/abc"), "the check's address stays out of the log")
    }

    func testTheBudgetBoundsSlowServers() {
        let transport = HTTPTransport { _, _, timeout in
            Thread.sleep(forTimeInterval: timeout)
            throw HTTPTransport.Failure(description: "Timeout was reached")
        }
        let monitor = HealthchecksMonitor(check: URL(string: "https://hc.example/abc")!, transport: transport, secrets: [], log: Logger(sink: { _ in }),
                                          requestTimeout: 0.5, budgetSeconds: 1.5, retryDelays: [0.1, 0.2, 0.4])
        let started = Date()
        monitor.finish(exitCode: 1, summary: "x", output: "")
        XCTAssertLessThan(Date().timeIntervalSince(started), 2.2, "the budget (1.5 s) cuts the retries short; unbounded they would take ~2.7 s")
    }

    func testClientErrorsAreNotRetried() {
        let recorder = Recorder()
        let transport = HTTPTransport { url, body, _ in
            recorder.add(url, body)
            return .init(status: 400, headers: [:])
        }
        let monitor = HealthchecksMonitor(check: URL(string: "https://hc.example/abc")!, transport: transport, secrets: [], log: Logger(sink: { _ in }))
        monitor.finish(exitCode: 1, summary: "x", output: "")
        XCTAssertEqual(recorder.requests.count, 1)
    }

    func testNoURLMeansNoRequests() {
        let transport = HTTPTransport { _, _, _ in
            XCTFail("no request expected")
            return .init(status: 200, headers: [:])
        }
        let monitor = HealthchecksMonitor(check: nil, transport: transport, secrets: [], log: Logger(sink: { _ in }))
        monitor.start()
        monitor.finish(exitCode: 0, summary: "", output: "")
    }
}

/// The real transport (URLSession) against servers the test runs on loopback: whatever the server
/// does, a ping costs at most its budget and only warns; an answer gives its status and
/// `Ping-Body-Limit`.
/// The cloud-backup binary built beside this test bundle (`swift build --build-tests` builds both): the
/// one whose `http-exchange` child makes requests, as in the real tool.
func builtCloudBackupBinary() -> String {
    ((CommandLineInterface.runningBinary() ?? "") as NSString).deletingLastPathComponent + "/cloud-backup"
}

final class HealthchecksTransportTests: XCTestCase {
    // Requests go through the child process, as they do in the tool.
    override func setUp() {
        HTTPClient.isolatedExecutable.withLock { $0 = builtCloudBackupBinary() }
    }

    override func tearDown() {
        HTTPClient.isolatedExecutable.withLock { $0 = nil }
    }

    final class Lines: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func add(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
    }

    /// Tries of 0.5 s (URLSession is told 1 s: it keeps whole seconds), 1.2 s in all.
    func monitor(port: Int, log: Lines, requestTimeout: Double = 0.5, budget: Double = 1.2) -> HealthchecksMonitor {
        HealthchecksMonitor(check: URL(string: "http://127.0.0.1:\(port)/ping/abc")!, transport: .urlSession(trust: .systemOnly), secrets: [],
                            log: Logger(sink: { log.add($0) }), requestTimeout: requestTimeout, budgetSeconds: budget, retryDelays: [0.1, 0.2, 0.4])
    }

    /// Accepts, reads nothing, answers nothing, until the test ends.
    func silentServer() throws -> LoopbackServer {
        try LoopbackServer { _, server in
            while !server.isStopped { Thread.sleep(forTimeInterval: 0.05) }
        }
    }

    func testAServerThatAcceptsAndNeverAnswersCostsAtMostThePingBudget() throws {
        let server = try silentServer()
        defer { server.stop() }
        let lines = Lines()
        let monitor = monitor(port: server.port, log: lines)
        let started = Date()
        monitor.start()
        let elapsed = Date().timeIntervalSince(started)
        // A try of 0.5 s, 0.1 s, a try cut to 0.35 s (the budget's end less 0.25 s); the next retry
        // (0.2 s) would leave less than 0.5 s.
        XCTAssertLessThan(elapsed, 1.2 + 0.3, "the 1.2 s budget holds")
        XCTAssertGreaterThan(elapsed, 0.85, "two tries")
        XCTAssertEqual(monitor.bodyLimit, PingBody.defaultLimit)
        let warning = lines.all.last ?? ""
        XCTAssertTrue(warning.contains("could not ping Healthchecks at http://127.0.0.1:\(server.port)/… (no answer within 0."), warning)
        XCTAssertTrue(warning.contains("the job's result is not affected"), warning)
    }

    /// Answers the request, but one byte of the header every 0.2 s, never ending it.
    func testAServerThatAnswersSlowlyCostsAtMostThePingBudget() throws {
        let server = try LoopbackServer { connection, server in
            guard LoopbackServer.readRequest(connection) != nil, LoopbackServer.write(connection, "HTTP/1.1 200 OK\r\nX-Slow: ") else { return }
            while !server.isStopped, LoopbackServer.write(connection, "a") { Thread.sleep(forTimeInterval: 0.2) }
        }
        defer { server.stop() }
        let lines = Lines()
        let started = Date()
        monitor(port: server.port, log: lines).finish(exitCode: 0, summary: "done", output: "")
        XCTAssertLessThan(Date().timeIntervalSince(started), 1.2 + 0.3, "the 1.2 s budget holds")
        let warning = lines.all.last ?? ""
        XCTAssertTrue(warning.contains("could not ping Healthchecks at http://127.0.0.1:\(server.port)/… (no answer within 0."), warning)
    }

    /// A server that sends a status line and closes the connection inside the headers makes
    /// swift-corelibs-foundation end its process with a fatal error ("Transfer completed, but there's no
    /// response"). In the child that makes the request, that is a failed ping, and this process (the
    /// job) goes on.
    func testAnAnswerCutInsideItsHeadersIsAFailedPingNotACrashedJob() throws {
        let server = try LoopbackServer { connection, _ in
            guard LoopbackServer.readRequest(connection) != nil else { return }
            _ = LoopbackServer.write(connection, "HTTP/1.1 200 OK\r\nX-Cut: a")
        }
        defer { server.stop() }
        for _ in 0..<3 {
            XCTAssertThrowsError(try HTTPClient.exchange(url: URL(string: "http://127.0.0.1:\(server.port)/ping/abc")!, body: nil, timeout: 2,
                                                         trust: .systemOnly)) { error in
                let text = "\(error)"
                XCTAssertFalse(text.isEmpty)
            }
        }
        let lines = Lines()
        monitor(port: server.port, log: lines, requestTimeout: 2, budget: 5).finish(exitCode: 0, summary: "done", output: "")
        XCTAssertTrue((lines.all.last ?? "").contains("could not ping Healthchecks"), lines.all.joined(separator: "\n"))
    }

    /// Our own bound, not URLSession's: told to wait 60 s, URLSession is given up on after 1.
    func testTheTransportsOwnBoundHoldsWhenURLSessionWouldWaitLonger() throws {
        let server = try silentServer()
        defer { server.stop() }
        let started = Date()
        XCTAssertThrowsError(try HTTPClient.exchange(url: URL(string: "http://127.0.0.1:\(server.port)/ping/abc/start")!, body: nil,
                                                     contentType: "text/plain", timeout: 1, answerLimit: 0, trust: .systemOnly, urlSessionTimeout: 60)) { error in
            XCTAssertEqual("\(error)", "no answer within 1 s")
        }
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertLessThan(elapsed, 1.5)
        XCTAssertGreaterThan(elapsed, 0.9)
        // The abandoned request does not block the next one.
        let answering = try LoopbackServer { connection, _ in
            guard LoopbackServer.readRequest(connection) != nil else { return }
            LoopbackServer.write(connection, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
        }
        defer { answering.stop() }
        let answer = try HTTPClient.exchange(url: URL(string: "http://127.0.0.1:\(answering.port)/x")!, body: nil, timeout: 2, answerLimit: 10, trust: .systemOnly)
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.body, "OK")
    }

    func testAnAnswerGivesItsStatusAndPingBodyLimitAndThePOSTBodyArrives() throws {
        let requests = Lines()
        let server = try LoopbackServer { connection, _ in
            guard let request = LoopbackServer.readRequest(connection) else { return }
            requests.add(request.head + "\n\n" + String(decoding: request.body, as: UTF8.self))
            LoopbackServer.write(connection, "HTTP/1.1 200 OK\r\nping-body-limit: 1234\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
        }
        defer { server.stop() }
        // In this process (not the http-exchange child), to see the CA hook's counter move.
        HTTPClient.isolatedExecutable.withLock { $0 = nil }
        let hookCalls = CurlTrustHook.calls.withLock { $0 }
        let lines = Lines()
        let monitor = monitor(port: server.port, log: lines)
        monitor.start()
        monitor.finish(exitCode: 3, summary: "backup finished: ü", output: "line\n")
        XCTAssertEqual(monitor.bodyLimit, 1234)
        XCTAssertEqual(lines.all, [], "no warning")
        let seen = requests.all
        XCTAssertEqual(seen.count, 2, "\(seen)")
        XCTAssertTrue(seen.first?.hasPrefix("GET /ping/abc/start?rid=\(monitor.runID) HTTP/1.1\r\n") == true, "\(seen)")
        XCTAssertTrue(seen.last?.hasPrefix("POST /ping/abc/3?rid=\(monitor.runID) HTTP/1.1\r\n") == true, "\(seen)")
        XCTAssertTrue(seen.last?.lowercased().contains("content-type: text/plain; charset=utf-8") == true, "\(seen)")
        XCTAssertTrue(seen.last?.lowercased().contains("user-agent: cloud-backup") == true, "\(seen)")
        XCTAssertTrue(seen.last?.hasSuffix("\n\nbackup finished: ü\n\n--- end of the output ---\nline") == true, "\(seen)")
        XCTAssertGreaterThan(CurlTrustHook.calls.withLock { $0 }, hookCalls,
                             "URLSession's transfers reach the CA hook (curl_multi_add_handle exported: Package.swift)")
    }

    func testRedirectsAreNotFollowed() throws {
        let requests = Lines()
        let server = try LoopbackServer { connection, _ in
            guard let request = LoopbackServer.readRequest(connection) else { return }
            requests.add(request.head)
            LoopbackServer.write(connection, "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        defer { server.stop() }
        let answer = try HTTPClient.exchange(url: URL(string: "http://127.0.0.1:\(server.port)/ping/abc")!, body: nil, timeout: 2, trust: .systemOnly)
        XCTAssertEqual(answer.status, 302)
        XCTAssertEqual(requests.all.count, 1)
    }
}

/// `CLOUD_BACKUP_CA_FILE` for the tool's own HTTPS requests (URLSession).
final class TLSTrustTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "tls-trust-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    func testTheSettingComesFromTheEnvironmentAndEmptyMeansUnset() {
        XCTAssertEqual(TLSTrust(environment: ["CLOUD_BACKUP_CA_FILE": "/etc/ca.pem"]).caFile, "/etc/ca.pem")
        XCTAssertNil(TLSTrust(environment: ["CLOUD_BACKUP_CA_FILE": ""]).caFile)
        XCTAssertNil(TLSTrust(environment: [:]).caFile)
        // As the configuration chooses it: AWS_CA_BUNDLE stands in for an unset CLOUD_BACKUP_CA_FILE.
        XCTAssertEqual(TLSTrust(environment: ["AWS_CA_BUNDLE": "/etc/aws.pem"]), TLSTrust(caFile: "/etc/aws.pem", variable: "AWS_CA_BUNDLE"))
        XCTAssertEqual(TLSTrust(environment: ["AWS_CA_BUNDLE": "/etc/aws.pem", "CLOUD_BACKUP_CA_FILE": "/etc/ca.pem"]).caFile, "/etc/ca.pem")
    }

    func testTheBundleIsTheSystemStoreThenTheCAFile() throws {
        let system = "\(directory)/system.crt"
        try "-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----".write(toFile: system, atomically: true, encoding: .utf8)
        try pem.write(toFile: "\(directory)/ca.pem", atomically: true, encoding: .utf8)
        let trust = TLSTrust(caFile: "\(directory)/ca.pem")
        let bundle = try XCTUnwrap(trust.bundle(host: "hc.example:443", systemBundles: ["\(directory)/missing.crt", system]))
        XCTAssertEqual(String(decoding: bundle, as: UTF8.self), "-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----\n" + pem)
        XCTAssertNil(try TLSTrust.systemOnly.bundle(host: "hc.example:443"), "no CA file: URLSession's default, untouched")
    }

    func testACAFileThatCannotBeUsedIsAnErrorNamingTheSettingAndTheHost() throws {
        try "not a certificate\n".write(toFile: "\(directory)/notes.txt", atomically: true, encoding: .utf8)
        for (file, reason) in [("\(directory)/missing.pem", "cannot be read (No such file or directory)"),
                               ("\(directory)/notes.txt", "holds no PEM certificate")] {
            XCTAssertThrowsError(try TLSTrust(caFile: file).bundle(host: "hc.example:8443")) { error in
                let failure = error as? HTTPTransport.Failure
                XCTAssertEqual(failure?.isTLS, true)
                XCTAssertTrue(failure?.description.hasPrefix("CLOUD_BACKUP_CA_FILE=\(file) \(reason)") == true, "\(error)")
                XCTAssertTrue(failure?.description.contains("hc.example:8443") == true, "\(error)")
            }
        }
    }

    /// Over plain HTTP the CA file is not read: a broken one costs nothing there.
    func testPlainHTTPDoesNotReadTheCAFile() throws {
        let server = try LoopbackServer { connection, _ in
            guard LoopbackServer.readRequest(connection) != nil else { return }
            LoopbackServer.write(connection, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        defer { server.stop() }
        let answer = try HTTPClient.exchange(url: URL(string: "http://127.0.0.1:\(server.port)/")!, body: nil, timeout: 2,
                                             trust: TLSTrust(caFile: "\(directory)/missing.pem"))
        XCTAssertEqual(answer.status, 200)
    }
}
