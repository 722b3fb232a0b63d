import XCTest
import TestSupport
@testable import CloudBackupCore

/// CLOUD_BACKUP_CA_FILE: checked with the other variables, and handed to each tool its own way.
final class CertificateAuthorityTests: XCTestCase {
    static let pem = """
        -----BEGIN CERTIFICATE-----
        MIIBeTCCAR+gAwIBAgIUWc3Jm8q9d2aD6hT8sTz0yAiGv0QwCgYIKoZIzj0EAwIwHzEdMBsGA1UEAwwU
        -----END CERTIFICATE-----

        """
    let base = ["HOME": "/home/user", "PATH": "/usr/bin:/bin", "RESTIC_PASSWORD": "pw"]
    var root: String!

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "ca-file-tests-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Self.pem.write(toFile: root + "/ca.pem", atomically: true, encoding: .utf8)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
    }

    func load(_ extra: [String: String]) throws -> Configuration {
        try ConfigurationLoader.load(environment: base.merging(extra) { $1 }, needs: [.repositoryPassword])
    }

    func problems(_ extra: [String: String]) -> [String] {
        do {
            _ = try load(extra)
            XCTFail("expected a configuration error")
        } catch CloudBackupError.configuration(let problems) {
            return problems
        } catch {
            XCTFail("unexpected \(error)")
        }
        return []
    }

    func testTheCAFileReachesEveryToolItsOwnWay() throws {
        let configuration = try load(["CLOUD_BACKUP_CA_FILE": root + "/ca.pem", "AWS_CA_BUNDLE": root + "/ca.pem", "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"])
        XCTAssertEqual(configuration.certificateAuthorityFile, root + "/ca.pem")
        let child = configuration.childEnvironment
        // rclone and restic (Go): SSL_CERT_FILE adds it to the system's certificate directories.
        XCTAssertEqual(child["SSL_CERT_FILE"], root + "/ca.pem")
        // aws-credential-process (run by rclone with rclone's environment) reads it itself.
        XCTAssertEqual(child["CLOUD_BACKUP_CA_FILE"], root + "/ca.pem")
        // rclone 1.60 fails every S3 call with AWS_CA_BUNDLE; RCLONE_CA_CERT and RESTIC_CACERT would
        // replace the system's CAs instead of adding to them.
        XCTAssertNil(child["AWS_CA_BUNDLE"])
        XCTAssertNil(child["RCLONE_CA_CERT"])
        XCTAssertNil(child["RESTIC_CACERT"])
        XCTAssertEqual(configuration.notes, [], "CLOUD_BACKUP_CA_FILE set: AWS_CA_BUNDLE is simply not passed on")
        XCTAssertFalse(configuration.secrets.contains(root + "/ca.pem"), "a path to public certificates is no secret")
    }

    func testWithoutACAFileTheSystemStoreAloneIsUsed() throws {
        let configuration = try load(["CLOUD_BACKUP_CA_FILE": "", "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"])
        XCTAssertNil(configuration.certificateAuthorityFile)
        XCTAssertNil(configuration.childEnvironment["CLOUD_BACKUP_CA_FILE"], "empty counts as unset")
        XCTAssertEqual(configuration.childEnvironment["SSL_CERT_FILE"], "/etc/ssl/certs/ca-certificates.crt", "the user's own, untouched")
        XCTAssertEqual(configuration.notes, [])
    }

    /// Set alone, AWS_CA_BUNDLE says the same for S3 and STS: taken as the CA file, said once, and
    /// still never passed on.
    func testAWSCABundleAloneIsTakenAsTheCAFileAndSaidSo() throws {
        let configuration = try load(["AWS_CA_BUNDLE": root + "/ca.pem"])
        XCTAssertEqual(configuration.certificateAuthorityFile, root + "/ca.pem")
        XCTAssertNil(configuration.childEnvironment["AWS_CA_BUNDLE"])
        XCTAssertEqual(configuration.childEnvironment["CLOUD_BACKUP_CA_FILE"], root + "/ca.pem")
        XCTAssertEqual(configuration.childEnvironment["SSL_CERT_FILE"], root + "/ca.pem")
        XCTAssertEqual(configuration.notes.count, 1)
        XCTAssertTrue(configuration.notes[0].hasPrefix("CLOUD_BACKUP_CA_FILE is not set: using AWS_CA_BUNDLE=\(root!)/ca.pem as the CA file"), "\(configuration.notes)")
        XCTAssertTrue(configuration.notes[0].contains("rclone 1.60 fails every S3 call when it is set"), "\(configuration.notes)")
        // A broken one is a problem named as such, with the way out.
        let found = problems(["AWS_CA_BUNDLE": root + "/missing.pem"])
        XCTAssertEqual(found.count, 1, "\(found)")
        XCTAssertTrue(found[0].hasPrefix("AWS_CA_BUNDLE=\(root!)/missing.pem (used as CLOUD_BACKUP_CA_FILE, which is not set): no such file"), "\(found)")
        XCTAssertTrue(found[0].hasSuffix("Or unset AWS_CA_BUNDLE: cloud-backup never passes it on (rclone 1.60 fails every S3 call when it is set)."), "\(found)")
    }

    func testACAFileThatCannotBeUsedIsReportedWithTheOtherProblems() throws {
        try "no certificate here\n".write(toFile: root + "/empty.pem", atomically: true, encoding: .utf8)
        try "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n".write(toFile: root + "/garbled.pem", atomically: true, encoding: .utf8)
        let cases: [(String, String)] = [
            ("ca.pem", "CLOUD_BACKUP_CA_FILE=ca.pem: must be an absolute path"),
            (root + "/missing.pem", "CLOUD_BACKUP_CA_FILE=\(root!)/missing.pem: no such file; it should be the PEM file of the CA certificate(s)"),
            (root!, "CLOUD_BACKUP_CA_FILE=\(root!) is a directory, not a file (for several CAs, put their certificates one after the other in one file)"),
            ("/dev/null", "CLOUD_BACKUP_CA_FILE=/dev/null is a device, not a file"),
            (root + "/empty.pem", "CLOUD_BACKUP_CA_FILE=\(root!)/empty.pem: the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            (root + "/garbled.pem", "CLOUD_BACKUP_CA_FILE=\(root!)/garbled.pem: the file holds no PEM certificate"),
        ]
        for (path, expected) in cases {
            let found = problems(["CLOUD_BACKUP_CA_FILE": path, "RESTIC_REST_PORT": "+1"])
            XCTAssertEqual(found.count, 2, "\(path): \(found)")
            XCTAssertTrue(found.contains { $0.hasPrefix(expected) }, "\(path): \(found)")
        }
        XCTAssertEqual(CloudBackupError.configuration(problems(["CLOUD_BACKUP_CA_FILE": "ca.pem"])).exitCode, 78)
    }

    func testTheInfnLoginGetsItAsTheCredentialProcessWill() throws {
        let world = try AccountDirectory()
        defer { world.remove() }
        var environment = world.environment
        environment["CLOUD_BACKUP_CA_FILE"] = root + "/ca.pem"
        environment["AWS_CA_BUNDLE"] = "/elsewhere/bundle.pem"
        let configuration = try ConfigurationLoader.load(environment: environment, needs: [])
        let settings = try XCTUnwrap(configuration.infn)
        XCTAssertEqual(settings.certificateAuthorityFile, root + "/ca.pem")
        // `config`: a new account verifies the identity provider with it.
        XCTAssertEqual(OidcCommand.deviceFlow(account: "infncloud", settings: settings, reauthenticate: false),
                       ["infncloud", "--iss=https://iam.cloud.infn.it/", "--scope=openid profile offline_access email", "--cert-path=\(root!)/ca.pem",
                        "--flow=device", "--pw-env=OIDC_PASSWORD", "--confirm-default", "--prompt=none", "--no-url-call"])
        // rclone runs aws-credential-process with the environment it was given.
        var problems: [String] = []
        let fromChild = ConfigurationLoader.infnSettings(user: "alice", bucket: "vm1", environment: configuration.childEnvironment, password: "", problems: &problems)
        XCTAssertEqual(problems, [])
        XCTAssertEqual(fromChild?.certificateAuthorityFile, root + "/ca.pem")
    }

    func testTheAccountsBundleIsChangedOnlyWhenItDiffers() {
        let exists: (String) -> Bool = { $0 == "/etc/ssl/certs/ca-certificates.crt" }
        func wanted(_ current: String, _ caFile: String?) -> String? {
            OidcAgent.wantedCertificatePath(current: current, caFile: caFile, exists: exists)
        }
        XCTAssertNil(wanted("/srv/ca.pem", "/srv/ca.pem"))
        XCTAssertEqual(wanted("/etc/ssl/certs/ca-certificates.crt", "/srv/ca.pem"), "/srv/ca.pem", "set after config")
        XCTAssertEqual(wanted("/old/ca.pem", "/srv/ca.pem"), "/srv/ca.pem", "moved")
        XCTAssertEqual(wanted("", "/srv/ca.pem"), "/srv/ca.pem")
        XCTAssertNil(wanted("/etc/ssl/certs/ca-certificates.crt", nil), "the system's, as oidc-gen chose it")
        XCTAssertNil(wanted("/etc/pki/tls/certs/ca-bundle.crt", nil), "any of oidc-gen's system bundles")
        XCTAssertNil(wanted("", nil))
        XCTAssertEqual(wanted("/srv/ca.pem", nil), "/etc/ssl/certs/ca-certificates.crt", "unset again: back to the system's")
        XCTAssertNil(OidcAgent.wantedCertificatePath(current: "/srv/ca.pem", caFile: nil, exists: { _ in false }), "no system bundle to go back to")
    }

    /// An account made before CLOUD_BACKUP_CA_FILE was set is made again from itself, its
    /// configuration handed to oidc-gen through a pipe (never a file, never argv), without a browser.
    func testAnAccountMadeWithAnotherBundleIsMadeAgainFromItself() throws {
        let world = try AccountDirectory()
        defer { world.remove() }
        var environment = world.environment
        environment["CLOUD_BACKUP_CA_FILE"] = root + "/ca.pem"
        let account = #"{"name":"infncloud","client_secret":"client-secret-5c1","refresh_token":"x.e30.","cert_path":"/etc/ssl/certs/ca-certificates.crt"}"#
        let handed = Locked<String?>(nil)
        let runner = FakeProcessRunner { spec, _ in
            switch (spec.executable, spec.arguments.first) {
            case ("oidc-agent", _): return ProcessResult(status: .exited(0), standardOutput: #"{"loaded_accounts":["infncloud"]}"#)
            case ("oidc-gen", "-p"): return ProcessResult(status: .exited(0), standardOutput: account)
            case ("oidc-gen", _):
                // What oidc-gen would read from the descriptor it was given.
                if let descriptor = spec.inheritedDescriptors.first {
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    let count = read(descriptor, &buffer, buffer.count)
                    handed.withLock { $0 = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self) }
                }
                return ProcessResult(status: .exited(0), standardOutput: "Everything setup correctly!\n")
            default: return ProcessResult(status: .exited(1))
            }
        }
        let configuration = try ConfigurationLoader.load(environment: environment, needs: [])
        let lines = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }), hostName: "vm", sleep: { _ in })
        try InfnSetup.prepare(configuration, context: context)
        let replace = try XCTUnwrap(runner.specs.first { $0.executable == "oidc-gen" && $0.arguments.first != "-p" })
        let descriptor = try XCTUnwrap(replace.inheritedDescriptors.first)
        XCTAssertEqual(replace.arguments, ["infncloud", "--file=/dev/fd/\(descriptor)", "--flow=refresh", "--cert-path=\(root!)/ca.pem", "--pw-env=OIDC_PASSWORD",
                                           "--confirm-yes", "--prompt=none", "--no-url-call"])
        XCTAssertEqual(handed.withLock { $0 }, account)
        XCTAssertEqual(replace.environment["OIDC_PASSWORD"], "agent-pw-93xq")
        XCTAssertFalse(replace.commandLine.contains("client-secret-5c1"))
        XCTAssertEqual(fcntl(descriptor, F_GETFD), -1, "the pipe is closed again")
        XCTAssertEqual(runner.commands.filter { $0.hasPrefix("oidc-add") }, [], "oidc-gen loaded it")
        XCTAssertTrue(lines.text.contains("the oidc-agent account infncloud now verifies the identity provider with CLOUD_BACKUP_CA_FILE=\(root!)/ca.pem (it used /etc/ssl/certs/ca-certificates.crt)"), lines.text)

        // Already right: nothing to do, no second oidc-gen.
        let caFile = root + "/ca.pem"
        let aligned = FakeProcessRunner { spec, _ in
            switch (spec.executable, spec.arguments.first) {
            case ("oidc-agent", _): return ProcessResult(status: .exited(0), standardOutput: #"{"loaded_accounts":["infncloud"]}"#)
            case ("oidc-gen", "-p"): return ProcessResult(status: .exited(0), standardOutput: #"{"name":"infncloud","cert_path":"\#(caFile)"}"#)
            default: return ProcessResult(status: .exited(1))
            }
        }
        try InfnSetup.prepare(configuration, context: JobContext(environment: [:], runner: aligned, signals: SignalMonitor(), log: Logger(sink: { _ in }), hostName: "vm", sleep: { _ in }))
        XCTAssertEqual(aligned.commands.filter { $0.hasPrefix("oidc-gen") }, ["oidc-gen -p infncloud --pw-env=OIDC_PASSWORD"])
    }

    /// oidc-gen changes nothing when the new bundle does not work; the message says the account is
    /// unchanged and names the identity provider.
    func testABundleThatDoesNotWorkLeavesTheAccountAndSaysWhy() throws {
        let world = try AccountDirectory()
        defer { world.remove() }
        var environment = world.environment
        environment["CLOUD_BACKUP_CA_FILE"] = root + "/ca.pem"
        let port = try freeLoopbackPort()
        environment["OIDC_ISSUER_URL"] = "http://127.0.0.1:\(port)/"
        let runner = FakeProcessRunner { spec, _ in
            switch (spec.executable, spec.arguments.first) {
            case ("oidc-agent", _): return ProcessResult(status: .exited(0), standardOutput: #"{"loaded_accounts":["infncloud"]}"#)
            case ("oidc-gen", "-p"): return ProcessResult(status: .exited(0), standardOutput: #"{"name":"infncloud","cert_path":"/old/ca.pem"}"#)
            case ("oidc-gen", _):
                return ProcessResult(status: .exited(1), standardError: "Error: Could not get token endpoint from the configuration endpoint. This could be because of a network issue. But it's more likely that your issuer is not correct.\n")
            default: return ProcessResult(status: .exited(1))
            }
        }
        let configuration = try ConfigurationLoader.load(environment: environment, needs: [])
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { _ in }), hostName: "vm", sleep: { _ in })
        XCTAssertThrowsError(try InfnSetup.prepare(configuration, context: context)) { error in
            let text = "\(error)"
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 77, text)
            XCTAssertTrue(text.contains("oidc-agent cannot use CLOUD_BACKUP_CA_FILE=\(root!)/ca.pem: the identity provider http://127.0.0.1:\(port)/ cannot be reached"), text)
            XCTAssertTrue(text.contains("the account is unchanged (it still uses /old/ca.pem)"), text)
        }
    }
}
