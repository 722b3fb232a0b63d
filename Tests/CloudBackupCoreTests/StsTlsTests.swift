import XCTest
import TestSupport
@testable import CloudBackupCore

/// The STS call over HTTPS: the CA file is what makes the storage trusted, and a certificate no
/// trusted CA signed is the INFN login error (exit 77) naming the endpoint and the setting. The server
/// is Tests/Fixtures/ping_recorder.py with `--tls` (it answers 404 to the STS form: enough to show the
/// handshake went through).
final class StsTlsTests: XCTestCase {
    let runner = SystemProcessRunner()
    var directory = ""
    var server: (any RunningProcess)?
    var port = 0

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    override func setUpWithError() throws {
        HTTPClient.isolatedExecutable.withLock { $0 = builtCloudBackupBinary() }
        directory = NSTemporaryDirectory() + "sts-tls-\(UUID().uuidString.prefix(8))"
        let environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        let made = try runner.run(ProcessSpec(executable: "python3", arguments: ["\(Self.fixtures)/test_ca.py", directory], environment: environment))
        XCTAssertEqual(made.status, .exited(0), made.standardError)
        let ready = "\(directory)/port"
        server = try runner.launch(ProcessSpec(executable: "python3", arguments: ["\(Self.fixtures)/ping_recorder.py", "\(directory)/record.jsonl",
                                                                                 "--tls", directory, "--ready-file", ready],
                                               environment: environment, standardOutput: .discard, standardError: .discard))
        let end = Date().addingTimeInterval(15)
        while !FileManager.default.fileExists(atPath: ready) && Date() < end { Thread.sleep(forTimeInterval: 0.05) }
        port = Int((try? String(contentsOfFile: ready, encoding: .utf8)) ?? "") ?? 0
        XCTAssertNotEqual(port, 0, "the TLS recorder did not start")
    }

    override func tearDown() {
        HTTPClient.isolatedExecutable.withLock { $0 = nil }
        if let server, !server.hasExited {
            server.send(SIGKILL)
            _ = server.wait()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    func settings(caFile: String) throws -> InfnSettings {
        var problems: [String] = []
        let settings = ConfigurationLoader.infnSettings(user: "alice", bucket: "vm1", environment: ["S3_ENDPOINT_URL": "https://127.0.0.1:\(port)/"],
                                                        password: "pw", problems: &problems)
        XCTAssertEqual(problems, [])
        var result = try XCTUnwrap(settings)
        result.certificateAuthorityFile = caFile
        return result
    }

    func testTheCAFileMakesTheStorageTrusted() throws {
        XCTAssertThrowsError(try StsExchange.request(settings: try settings(caFile: "\(directory)/ca.pem"), webIdentityToken: "token", timeout: 5)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("refused the login token (HTTP 404)"), "the answer came over TLS: \(text)")
            XCTAssertFalse(text.contains("TLS"), text)
        }
    }

    func testAWrongCAIsTheLoginErrorNamingTheHostAndTheSetting() throws {
        let wrong = "\(directory)/other-ca.pem"
        let started = Date()
        XCTAssertThrowsError(try StsExchange.request(settings: try settings(caFile: wrong), webIdentityToken: "token", timeout: 5)) { error in
            guard let error = error as? CloudBackupError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.exitCode, 77)
            let text = error.description
            XCTAssertTrue(text.contains("cannot reach the storage's STS at https://127.0.0.1:\(port)/"), text)
            XCTAssertTrue(text.contains("the certificate of 127.0.0.1:\(port) is not trusted"), text)
            XCTAssertTrue(text.contains("CLOUD_BACKUP_CA_FILE=\(wrong)"), text)
            XCTAssertTrue(text.contains("set CLOUD_BACKUP_CA_FILE to the PEM file of the CA that signed the storage's certificate"), text)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 3, "a refused certificate is not waited on")
    }
}
