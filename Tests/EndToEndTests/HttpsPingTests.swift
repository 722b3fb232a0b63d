import Foundation
import XCTest
@testable import CloudBackupCore

/// Healthchecks pings over HTTPS, URLSession trusting a private CA through `CLOUD_BACKUP_CA_FILE`
/// (the ping recorder serves a certificate of Tests/Fixtures/test_ca.py's CA).
final class HttpsPingTests: SandboxTestCase {
    /// ca.pem, server.pem, server-key.pem and other-ca.pem, made once for the class.
    static let certificates: String = {
        let directory = NSTemporaryDirectory() + "cloud-backup-e2e/https-ping-ca-\(UUID().uuidString.prefix(8))"
        let result = try? SystemProcessRunner().run(ProcessSpec(executable: "python3", arguments: ["\(Sandbox.fixtures)/test_ca.py", directory],
                                                                environment: ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]))
        XCTAssertEqual(result?.status, .exited(0), "test_ca.py: \(result?.standardError ?? "did not run")")
        return directory
    }()

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: certificates)
        super.tearDown()
    }

    func testPingsOverHTTPSTrustTheCAFile() throws {
        try sandbox.writeData(files: 2)
        let recorder = try PingRecorder(in: sandbox, tls: Self.certificates)
        let result = try sandbox.run(["backup", sandbox.data], ["BACKUP_CHECK_URL": recorder.url(), TLSTrust.setting: "\(Self.certificates)/ca.pem"])
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        XCTAssertFalse(result.standardError.contains("could not ping"), result.standardError)
        let pings = recorder.pings
        XCTAssertEqual(pings.map(\.path), ["/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/start", "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/0"])
        XCTAssertEqual(pings.first?.query["rid"], pings.last?.query["rid"], "one rid pairs start and end")
        XCTAssertTrue(pings.last?.body.hasPrefix("backup finished: snapshot ") == true, "\(pings)")
    }

    /// The ping of a configuration error is sent by a monitor with no job context: it reads the CA
    /// file from the process's environment.
    func testAConfigurationErrorIsPingedOverHTTPSToo() throws {
        let recorder = try PingRecorder(in: sandbox, tls: Self.certificates)
        let result = try sandbox.run(["backup", sandbox.data], ["BACKUP_CHECK_URL": recorder.url(), "LOCK_WAIT_SECONDS": "ten",
                                                                TLSTrust.setting: "\(Self.certificates)/ca.pem"])
        XCTAssertEqual(result.status, .exited(78), result.standardError)
        XCTAssertFalse(result.standardError.contains("could not ping"), result.standardError)
        XCTAssertEqual(recorder.pings.map(\.path), ["/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/78"])
    }

    /// A CA that did not sign the server's certificate: the job succeeds, nothing reaches the server,
    /// and the warning names the host and the setting (with its value).
    func testAWrongCAOnlyWarnsNamingTheHostAndTheSetting() throws {
        try sandbox.writeData(files: 2)
        let recorder = try PingRecorder(in: sandbox, tls: Self.certificates)
        let wrong = "\(Self.certificates)/other-ca.pem"
        let result = try sandbox.run(["backup", sandbox.data], ["BACKUP_CHECK_URL": recorder.url(), TLSTrust.setting: wrong, "PING_TIMEOUT_SECONDS": "1"])
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 1)
        let warnings = result.standardError.split(separator: "\n").filter { $0.contains("could not ping Healthchecks") }
        XCTAssertEqual(warnings.count, 2, "the start and the end ping each warn once:\n\(result.standardError)")
        for warning in warnings {
            XCTAssertTrue(warning.contains("at https://127.0.0.1:\(recorder.port)/…"), String(warning))
            XCTAssertTrue(warning.contains("the certificate of 127.0.0.1:\(recorder.port) is not trusted"), String(warning))
            XCTAssertTrue(warning.contains("\(TLSTrust.setting)=\(wrong)"), String(warning))
            XCTAssertTrue(warning.contains("the job's result is not affected"), String(warning))
            XCTAssertFalse(warning.contains("2b8a4c0e"), "the check's path stays out of the log")
        }
        XCTAssertEqual(recorder.pings.count, 0, "no request got past the handshake")
    }
}
