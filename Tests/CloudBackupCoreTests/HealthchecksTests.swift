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
