import Foundation
import XCTest
@testable import CloudBackupCore

/// The INFN Cloud chain with real parts: Ceph RGW (S3 + STS) from Debian's packages, real oidc-agent
/// 4.2.6, and the test OpenID provider (Tests/Fixtures/oidc_provider.py) approving device codes as a
/// person would. One cluster and one provider serve the whole class; each test has its own sandbox.
final class InfnChainTests: XCTestCase {
    /// Started once for the class (a Ceph cold start takes ~20 s).
    final class World: @unchecked Sendable {
        let directory: String
        let rgwDirectory: String
        var endpoint = ""
        var accessKey = ""
        var secretKey = ""
        var issuer = ""
        var idp: (any RunningProcess)?
        var idpPort = 0
        let runner = SystemProcessRunner()
        var environment: [String: String] { ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": directory] }

        init() throws {
            directory = NSTemporaryDirectory() + "cloud-backup-e2e/infn-world-\(UUID().uuidString.prefix(8))"
            rgwDirectory = directory + "/rgw"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }

        func script(_ arguments: [String], timeout: Double = 240) throws -> ProcessResult {
            let spec = ProcessSpec(executable: "\(Sandbox.fixtures)/ceph/rgw.sh", arguments: arguments, environment: environment,
                                   standardOutput: .collect(limit: 1 << 20), standardError: .tail(limit: 64 * 1024))
            guard let result = try runner.run(spec, timeout: timeout) else { throw CloudBackupError.internalError("rgw.sh \(arguments) timed out") }
            guard result.status.isSuccess else { throw CloudBackupError.internalError("rgw.sh \(arguments): \(result.standardError)") }
            return result
        }

        func start() throws {
            _ = try script(["start", rgwDirectory])
            let env = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: rgwDirectory + "/env.json"))) as? [String: Any] ?? [:]
            endpoint = env["endpoint"] as? String ?? ""
            accessKey = env["access_key"] as? String ?? ""
            secretKey = env["secret_key"] as? String ?? ""
            let ready = directory + "/idp.port"
            let spec = ProcessSpec(executable: "sh", arguments: ["-c", "exec \"$0\" \"$@\" >>\(directory)/idp.log 2>&1", "python3",
                                                                 "\(Sandbox.fixtures)/oidc_provider.py", "--state-dir", directory + "/idp",
                                                                 "--ready-file", ready, "--cert-file", directory + "/idp-cert.pem",
                                                                 "--refresh-lifetime", "\(30 * 86_400)", "--interval", "1"],
                                   environment: environment, standardOutput: .discard, standardError: .discard)
            idp = try runner.launch(spec)
            try waitFor("the identity provider", seconds: 20) { FileManager.default.fileExists(atPath: ready) }
            idpPort = Int(try String(contentsOfFile: ready, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            issuer = "http://127.0.0.1:\(idpPort)"
            _ = try script(["sts-setup", rgwDirectory, issuer, "object", directory + "/idp-cert.pem", "IAMaccess"])
        }

        func stop() {
            if let idp, !idp.hasExited {
                idp.send(SIGTERM)
                if waitForExit(idp, seconds: 10) == nil { idp.send(SIGKILL) }
            }
            _ = try? script(["stop", rgwDirectory])
            if ProcessInfo.processInfo.environment["KEEP_E2E_SANDBOX"] == nil {
                try? FileManager.default.removeItem(atPath: directory)
            }
        }

        /// Approves a device code at the provider, as the user would in a browser.
        func approve(_ code: String) throws {
            let answer = try HTTPClient.exchange(url: URL(string: "\(issuer)/test/approve")!, body: Data("user_code=\(code)".utf8),
                                                 contentType: "application/x-www-form-urlencoded", timeout: 10, answerLimit: 4096)
            XCTAssertEqual(answer.status, 200, answer.body)
        }

        func setMode(_ mode: String) throws {
            _ = try HTTPClient.exchange(url: URL(string: "\(issuer)/test/mode")!, body: Data("mode=\(mode)".utf8),
                                        contentType: "application/x-www-form-urlencoded", timeout: 10, answerLimit: 4096)
        }

        func deviceCodesIssued() throws -> Int {
            let answer = try HTTPClient.exchange(url: URL(string: "\(issuer)/test/state")!, body: nil, timeout: 10, answerLimit: 4 << 20)
            let state = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
            return (state?["device_codes"] as? [String: Any])?.count ?? (state?["device_codes"] as? [Any])?.count ?? 0
        }
    }

    nonisolated(unsafe) static var world: World?
    nonisolated(unsafe) static var worldError: String?

    override class func setUp() {
        super.setUp()
        do {
            let world = try World()
            try world.start()
            self.world = world
        } catch {
            worldError = "\(error)"
        }
    }

    override class func tearDown() {
        world?.stop()
        super.tearDown()
    }

    var sandbox: Sandbox!
    var world: World!
    var pings: PingRecorder!

    override func setUpWithError() throws {
        guard let world = Self.world else {
            XCTFail("the INFN test world did not start: \(Self.worldError ?? "?")")
            throw XCTSkip("no INFN world")
        }
        self.world = world
        sandbox = try Sandbox(name)
        pings = try PingRecorder(in: sandbox)
        let user = "user\(UUID().uuidString.prefix(6).lowercased())"
        sandbox.environment.merge([
            "AAI_USER": user,
            "BACKUP_BUCKET": "vm1",
            "OIDC_PASSWORD": "agent-secret-6b1d",
            "OIDC_ISSUER_URL": world.issuer,
            "S3_ENDPOINT_URL": world.endpoint,
            "OIDC_TOKEN_CHECK_URL": pings.url(check: "44444444-4444-4444-8444-444444444444"),
            "BACKUP_CHECK_URL": pings.url(check: "55555555-5555-4555-8555-555555555555"),
            "OIDC_CONFIG_DIR": sandbox.root + "/home/.config/oidc-agent",
        ]) { $1 }
        sandbox.environment.removeValue(forKey: "RCLONE_CONFIG")
        try FileManager.default.createDirectory(atPath: sandbox.root + "/home/.config/oidc-agent", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
    }

    override func tearDown() {
        // The agent this sandbox started (it daemonised): stopped by its PID.
        if let sandbox {
            let socket = InfnSettings.agentSocket(stateDirectory: "\(sandbox.root)/state")
            var env = sandbox.environment
            env["OIDC_SOCK"] = socket
            _ = try? sandbox.runner.run(ProcessSpec(executable: "oidc-agent", arguments: ["-k"], environment: env), timeout: 10)
            for pid in agentPIDs() { kill(pid, SIGTERM) }
        }
        sandbox?.cleanup()
    }

    /// oidc-agent daemons whose socket is in this sandbox.
    func agentPIDs() -> [pid_t] {
        let socket = InfnSettings.agentSocket(stateDirectory: "\(sandbox.root)/state")
        return Sandbox.processParents().keys.filter { pid in
            let arguments = PortOwner.commandLine(pid)
            return arguments.first?.hasSuffix("oidc-agent") == true && arguments.contains("--json") && arguments.contains(socket)
        }
    }

    /// Runs an interactive subcommand in a pseudo-terminal (util-linux `script`), approving the device
    /// code it shows. Returns its exit code and output.
    func interactive(_ subcommand: String, approve: Bool = true, _ extra: [String: String] = [:]) throws -> (code: Int32?, output: String) {
        let log = "\(sandbox.root)/logs/\(subcommand)-\(UUID().uuidString.prefix(4)).log"
        let spec = ProcessSpec(executable: "sh", arguments: ["-c", "exec script -qefc \"$0 \(subcommand)\" /dev/null >>\(log) 2>&1", sandbox.binary],
                               environment: sandbox.environment.merging(extra) { $1 }, standardOutput: .discard, standardError: .discard)
        let process = try sandbox.runner.launch(spec)
        var approved = false
        let end = Date().addingTimeInterval(120)
        while !process.hasExited && Date() < end {
            let text = sandbox.readLog(log)
            if approve, !approved, let range = text.range(of: "enter the code:") {
                // A terminal ends lines with CRLF, which Swift counts as one Character.
                let code = String(text[range.upperBound...].drop { $0 == " " }.prefix { !$0.isWhitespace && !$0.isNewline })
                if !code.isEmpty {
                    try world.approve(code)
                    approved = true
                }
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        guard let result = waitForExit(process, seconds: 5) else {
            process.send(SIGKILL)
            XCTFail("\(subcommand) did not finish:\n\(sandbox.readLog(log))")
            return (nil, sandbox.readLog(log))
        }
        guard case .exited(let code) = result.status else { return (nil, sandbox.readLog(log)) }
        return (code, sandbox.readLog(log))
    }

    func testConfigThenServerBackupSnapshotsForgetAndRefreshTokenCheck() throws {
        let first = try interactive("config")
        XCTAssertEqual(first.code, 0, first.output)
        for line in ["To log in, open in any browser:", "✓ logged in", "✓ login valid until", "✓ storage reachable: infncloud:/",
                     "✓ repository created at infncloud:/", "Next steps:"] {
            XCTAssertTrue(first.output.contains(line), "missing «\(line)» in:\n\(first.output)")
        }
        let rcloneConfig = sandbox.root + "/home/.config/rclone/rclone.conf"
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: rcloneConfig)[.posixPermissions] as? Int, 0o600)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: sandbox.root + "/state/aws-config")[.posixPermissions] as? Int, 0o600)
        let flows = try world.deviceCodesIssued()

        // Again: everything checked, nothing changed, no new login.
        let again = try interactive("config", approve: false)
        XCTAssertEqual(again.code, 0, again.output)
        XCTAssertTrue(again.output.contains("no new login needed"), again.output)
        XCTAssertTrue(again.output.contains("✓ repository found at"), again.output)
        XCTAssertEqual(try world.deviceCodesIssued(), flows, "no new device flow")

        try sandbox.writeData(files: 5, megabytes: 4)
        let (server, serverLog) = try sandbox.startServer()
        let backup = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(backup.status, .exited(0), backup.standardError + sandbox.readLog(serverLog))
        XCTAssertTrue(backup.standardError.contains("backup using the REST server"), backup.standardError)
        let snapshots = try sandbox.run(["restic", "snapshots", "--json"])
        XCTAssertEqual(snapshots.status, .exited(0), snapshots.standardError)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(snapshots.standardOutput.utf8)) as? [Any])?.count, 1)
        let forget = try sandbox.run(["forget", "--keep-last", "1", "--prune"])
        XCTAssertEqual(forget.status, .exited(0), forget.standardError)

        let check = try sandbox.run(["check-refresh-token"])
        XCTAssertEqual(check.status, .exited(0), check.standardError)
        XCTAssertTrue(check.standardError.contains("days left (expires "), check.standardError)
        let ping = pings.pings.last { $0.path.contains("44444444") }
        XCTAssertEqual(ping?.path, "/ping/44444444-4444-4444-8444-444444444444/0")
        XCTAssertTrue(ping?.body.contains("days left") == true)

        let status = try sandbox.run(["status"])
        XCTAssertTrue(status.standardOutput.contains("✓ oidc-agent: running on"), status.standardOutput)
        XCTAssertTrue(status.standardOutput.contains("✓ login: account infncloud loaded"), status.standardOutput)
        XCTAssertTrue(status.standardOutput.contains("✓ login: refresh token valid for"), status.standardOutput)

        // No secret on any log line or ping body.
        for text in [first.output, backup.standardError, sandbox.readLog(serverLog), check.standardError, status.standardOutput] + pings.pings.map(\.body) {
            XCTAssertFalse(text.contains("agent-secret-6b1d"))
            XCTAssertFalse(text.contains("e2e-repository-password-7f3a"))
        }
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 10)?.status, .exited(0))
    }

    func testWithoutATerminalConfigSaysHowToRunIt() throws {
        let result = try sandbox.run(["config"])
        XCTAssertEqual(result.status, .exited(77))
        XCTAssertTrue(result.standardError.contains("this command has no terminal"), result.standardError)
        XCTAssertTrue(result.standardError.contains("docker compose run --rm cloud-backup config"), result.standardError)
    }

    func testPlainS3KeysOnTheSameRGW() throws {
        let config = """
        [rgw]
        type = s3
        provider = Ceph
        endpoint = \(world.endpoint)
        access_key_id = \(world.accessKey)
        secret_access_key = \(world.secretKey)

        """
        let path = sandbox.root + "/home/rclone-keys.conf"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        sandbox.environment["RCLONE_CONFIG"] = path
        for name in ["AAI_USER", "BACKUP_BUCKET"] { sandbox.environment.removeValue(forKey: name) }
        sandbox.environment["BACKUP_REMOTE"] = "rgw:keys-\(UUID().uuidString.prefix(6).lowercased())/repo"
        try sandbox.writeData(files: 3)
        let backup = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(backup.status, .exited(0), backup.standardError)
        XCTAssertTrue(backup.standardError.contains("creating it with `restic init`"), backup.standardError)
        let second = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(second.status, .exited(0), second.standardError)
        XCTAssertEqual(try sandbox.run(["restic", "snapshots"]).status, .exited(0))
    }

    func testKeysExpireAndAreRenewedDuringOneServerRun() throws {
        // Keys that rclone must consider expired after 10 s.
        sandbox.environment["CREDENTIAL_MARGIN_SECONDS"] = "890"
        XCTAssertEqual(try interactive("config").code, 0)
        try sandbox.writeData(files: 3)
        let (server, serverLog) = try sandbox.startServer()
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0), sandbox.readLog(serverLog))
        Thread.sleep(forTimeInterval: 15)
        try "later\n".write(toFile: sandbox.data + "/later.txt", atomically: true, encoding: .utf8)
        let second = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(second.status, .exited(0), second.standardError + sandbox.readLog(serverLog))
        XCTAssertEqual(try sandbox.run(["restic", "snapshots", "--json"]).standardOutput.components(separatedBy: "\"short_id\"").count - 1, 2)
        server.send(SIGTERM)
        _ = waitForExit(server, seconds: 10)
    }

    func testFaultsGiveClearMessagesAndNeverTouchTheRepository() throws {
        XCTAssertEqual(try interactive("config").code, 0)
        try sandbox.writeData(files: 3)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        func snapshotCount() throws -> Int {
            let list = try sandbox.run(["restic", "snapshots", "--json"])
            return (try? JSONSerialization.jsonObject(with: Data(list.standardOutput.utf8)) as? [Any])?.count ?? -1
        }
        XCTAssertEqual(try snapshotCount(), 1)

        // oidc-agent not running: the job starts it and loads the account by itself.
        for pid in agentPIDs() { kill(pid, SIGKILL) }
        try waitFor("the agent to die", seconds: 10) { self.agentPIDs().isEmpty }
        let selfHealed = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(selfHealed.status, .exited(0), selfHealed.standardError)
        XCTAssertTrue(selfHealed.standardError.contains("started oidc-agent"), selfHealed.standardError)

        // Wrong OIDC_PASSWORD (the agent must load the account again to notice).
        for pid in agentPIDs() { kill(pid, SIGKILL) }
        try waitFor("the agent to die", seconds: 10) { self.agentPIDs().isEmpty }
        let wrong = try sandbox.run(["backup", sandbox.data], ["OIDC_PASSWORD": "not-the-agent-password"])
        XCTAssertEqual(wrong.status, .exited(77), wrong.standardError)
        XCTAssertTrue(wrong.standardError.contains("OIDC_PASSWORD does not unlock the oidc-agent account infncloud"), wrong.standardError)
        XCTAssertTrue(pings.pings.last?.path.hasSuffix("/77") == true)
        XCTAssertFalse(pings.pings.last!.body.contains("not-the-agent-password"))

        // The identity provider down while the account must be loaded.
        for pid in agentPIDs() { kill(pid, SIGKILL) }
        try waitFor("the agent to die", seconds: 10) { self.agentPIDs().isEmpty }
        try world.setMode("down")
        let idpDown = try sandbox.run(["backup", sandbox.data])
        try world.setMode("normal")
        XCTAssertEqual(idpDown.status, .exited(77), idpDown.standardError)
        XCTAssertTrue(idpDown.standardError.contains("could not load the oidc-agent account infncloud"), idpDown.standardError)

        // STS refuses (a role that does not exist): rclone gets no keys; nothing is initialised.
        let refused = try sandbox.run(["backup", sandbox.data], ["STS_ROLE_NAME": "NoSuchRole"])
        XCTAssertNotEqual(refused.status, .exited(0))
        XCTAssertFalse(refused.standardError.contains("restic init"), refused.standardError)
        XCTAssertTrue(refused.standardError.contains("the storage's STS refused the login token (AccessDenied"), refused.standardError)

        // Missing variable.
        let missing = try sandbox.run(["backup", sandbox.data], removing: ["OIDC_PASSWORD"])
        XCTAssertEqual(missing.status, .exited(78))
        XCTAssertTrue(missing.standardError.contains("OIDC_PASSWORD is not set"), missing.standardError)

        // Everything still there.
        XCTAssertEqual(try snapshotCount(), 2)
        let check = try sandbox.run(["restic", "check"])
        XCTAssertEqual(check.status, .exited(0), check.standardError)
    }

    func testReauthRenewsTheLogin() throws {
        XCTAssertEqual(try interactive("config").code, 0)
        let flows = try world.deviceCodesIssued()
        let reauth = try interactive("reauth")
        XCTAssertEqual(reauth.code, 0, reauth.output)
        XCTAssertTrue(reauth.output.contains("✓ logged in"), reauth.output)
        XCTAssertTrue(reauth.output.contains("✓ login valid until"), reauth.output)
        XCTAssertEqual(try world.deviceCodesIssued(), flows + 1)
        let check = try sandbox.run(["check-refresh-token"])
        XCTAssertEqual(check.status, .exited(0), check.standardError)
        XCTAssertTrue(check.standardError.contains("29 days left") || check.standardError.contains("30 days left"), check.standardError)
    }
}
