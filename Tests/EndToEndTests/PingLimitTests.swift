import Foundation
import XCTest
@testable import CloudBackupCore

/// Healthchecks pings against the recorder when its `Ping-Body-Limit` is smaller than the summary,
/// and `check-refresh-token` for a destination that needs no login.
final class PingLimitTests: SandboxTestCase {
    /// The recorder's JSON lines, with the body's size in bytes as received.
    func received(_ recorder: PingRecorder) -> [(path: String, body: String, bytes: Int)] {
        let text = (try? String(contentsOfFile: recorder.record, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return (object["path"] as? String ?? "", object["body"] as? String ?? "", object["body_bytes"] as? Int ?? -1)
        }
    }

    /// A backup whose failure summary holds multi-byte characters (the destination's name), pinged to
    /// a server whose limit falls inside one of them. Failed on the old code: the cut character became
    /// U+FFFD and the body (39 bytes for a 37-byte limit, say) went past the limit, with no marker.
    func testFinalPingBodiesStayWithinASmallBodyLimit() throws {
        let destination = "\(sandbox.root)/zielverzeichnis-äöüäöüäöüäöüäöüäöüäöüäöü"
        // A file where the repository should be: restic fails at once, naming the destination.
        XCTAssertTrue(FileManager.default.createFile(atPath: destination, contents: Data("not a repository\n".utf8)))
        try sandbox.writeData(files: 1)
        func backup(limit: Int) throws -> (path: String, body: String, bytes: Int) {
            let recorder = try PingRecorder(in: sandbox, arguments: ["--body-limit", "\(limit)"])
            let result = try sandbox.run(["backup", sandbox.data], ["BACKUP_REMOTE": destination, "BACKUP_CHECK_URL": recorder.url()])
            XCTAssertNotEqual(result.status, .exited(0), result.standardError)
            let pings = received(recorder)
            XCTAssertEqual(pings.count, 2, "\(pings)")
            return try XCTUnwrap(pings.last)
        }
        // The whole summary first, to find where its multi-byte characters start.
        let whole = try backup(limit: 100_000)
        let summary = String(whole.body.prefix { $0 != "\n" })
        let umlauts = try XCTUnwrap(summary.range(of: "äöü"), summary)
        let offset = summary[..<umlauts.lowerBound].utf8.count
        XCTAssertGreaterThan(summary.utf8.count, offset + 8, summary)
        // Limits that end inside a 2-byte character, for the marker and without it.
        for limit in [offset + 5, offset + 6] {
            let ping = try backup(limit: limit)
            XCTAssertTrue(ping.path.hasSuffix("/1") || ping.path.hasSuffix("/69"), ping.path)
            XCTAssertLessThanOrEqual(ping.bytes, limit, "limit \(limit): «\(ping.body)»")
            XCTAssertFalse(ping.body.contains("\u{FFFD}"), ping.body)
            XCTAssertTrue(ping.body.hasSuffix("…"), "a cut summary ends with the cut marker: «\(ping.body)»")
            XCTAssertTrue(summary.hasPrefix(String(ping.body.dropLast())), "«\(ping.body)» is the start of «\(summary)»")
        }
    }

    /// Failed on the old code: nothing was pinged, so the check stayed "new" and could never alert.
    func testCheckRefreshTokenForADestinationWithoutLoginPingsNothingToCheck() throws {
        let recorder = try PingRecorder(in: sandbox)
        let check = recorder.url(check: "44444444-4444-4444-8444-444444444444")
        let result = try sandbox.run(["check-refresh-token"], ["OIDC_TOKEN_CHECK_URL": check])
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        XCTAssertTrue(result.standardError.contains("nothing to check"), result.standardError)
        XCTAssertFalse(result.standardError.contains("44444444"), "the check URL stays out of the log")
        let pings = received(recorder)
        XCTAssertEqual(pings.map(\.path), ["/ping/44444444-4444-4444-8444-444444444444/start", "/ping/44444444-4444-4444-8444-444444444444/0"])
        XCTAssertTrue(pings.last?.body.hasPrefix("nothing to check:") == true, "\(pings)")

        // Given as a Docker secret file, the same.
        let file = sandbox.root + "/token-check-url"
        try check.write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try sandbox.run(["check-refresh-token"], ["OIDC_TOKEN_CHECK_URL_FILE": file])
        XCTAssertEqual(fromFile.status, .exited(0), fromFile.standardError)
        XCTAssertEqual(received(recorder).count, 4)
    }
}
