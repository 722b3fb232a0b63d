import Foundation
import XCTest
@testable import CloudBackupCore

/// The INFN Cloud chain with real parts: Ceph RGW (S3 + STS) from Debian's packages, real oidc-agent
/// 4.2.6, and the test OpenID provider (Tests/Fixtures/oidc_provider.py) approving device codes as a
/// person would. One cluster and one provider serve the whole class; each test has its own sandbox.
/// Everything speaks HTTPS, as INFN's services do: the RGW (S3 and STS), the provider and the ping
/// recorder serve certificates of a test CA (Tests/Fixtures/test_ca.py) that every client trusts
/// through CLOUD_BACKUP_CA_FILE alone.
final class InfnChainTests: XCTestCase {
    /// Started once for the class (a Ceph cold start takes ~20 s).
    final class World: @unchecked Sendable {
        let directory: String
        let rgwDirectory: String
        /// The test CA (ca.pem), the servers' certificate (server.pem, server-key.pem) and an unrelated CA (other-ca.pem).
        let tlsDirectory: String
        var caFile: String { tlsDirectory + "/ca.pem" }
        var otherCAFile: String { tlsDirectory + "/other-ca.pem" }
        /// What the tests' own requests to the provider trust.
        var trust: TLSTrust { TLSTrust(caFile: caFile) }
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
            tlsDirectory = directory + "/tls"
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
            let certificates = try runner.run(ProcessSpec(executable: "python3", arguments: ["\(Sandbox.fixtures)/test_ca.py", tlsDirectory], environment: environment))
            guard certificates.status.isSuccess else { throw CloudBackupError.internalError("test_ca.py: \(certificates.standardError)") }
            _ = try script(["start", "--tls", tlsDirectory, rgwDirectory])
            let env = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: rgwDirectory + "/env.json"))) as? [String: Any] ?? [:]
            endpoint = env["endpoint"] as? String ?? ""
            accessKey = env["access_key"] as? String ?? ""
            secretKey = env["secret_key"] as? String ?? ""
            try startIdentityProvider(port: 0)
            issuer = "https://127.0.0.1:\(idpPort)"
            _ = try script(["sts-setup", rgwDirectory, issuer, "object", directory + "/idp-cert.pem", "IAMaccess"])
        }

        /// The provider, on `port` (0: any free one). Restarted on its old port with the same state, the
        /// refresh tokens it issued stay valid.
        func startIdentityProvider(port: Int) throws {
            let ready = directory + "/idp.port"
            try? FileManager.default.removeItem(atPath: ready)
            let spec = ProcessSpec(executable: "sh", arguments: ["-c", "exec \"$0\" \"$@\" >>\(directory)/idp.log 2>&1", "python3",
                                                                 "\(Sandbox.fixtures)/oidc_provider.py", "--state-dir", directory + "/idp",
                                                                 "--ready-file", ready, "--cert-file", directory + "/idp-cert.pem", "--port", "\(port)",
                                                                 "--tls", tlsDirectory,
                                                                 "--refresh-lifetime", "\(30 * 86_400)", "--interval", "1"],
                                   environment: environment, standardOutput: .discard, standardError: .discard)
            idp = try runner.launch(spec)
            try waitFor("the identity provider", seconds: 20) { FileManager.default.fileExists(atPath: ready) }
            idpPort = Int(try String(contentsOfFile: ready, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }

        func stopIdentityProvider() {
            if let idp, !idp.hasExited {
                idp.send(SIGTERM)
                if waitForExit(idp, seconds: 10) == nil { idp.send(SIGKILL) }
            }
        }

        func stop() {
            stopIdentityProvider()
            _ = try? script(["stop", rgwDirectory])
            if ProcessInfo.processInfo.environment["KEEP_E2E_SANDBOX"] == nil {
                try? FileManager.default.removeItem(atPath: directory)
            }
        }

        /// Approves a device code at the provider, as the user would in a browser.
        func approve(_ code: String) throws {
            let answer = try HTTPClient.exchange(url: URL(string: "\(issuer)/test/approve")!, body: Data("user_code=\(code)".utf8),
                                                 contentType: "application/x-www-form-urlencoded", timeout: 10, answerLimit: 4096, trust: trust)
            XCTAssertEqual(answer.status, 200, answer.body)
        }

        func setMode(_ mode: String) throws {
            _ = try HTTPClient.exchange(url: URL(string: "\(issuer)/test/mode")!, body: Data("mode=\(mode)".utf8),
                                        contentType: "application/x-www-form-urlencoded", timeout: 10, answerLimit: 4096, trust: trust)
        }

        func deviceCodesIssued() throws -> Int {
            let answer = try HTTPClient.exchange(url: URL(string: "\(issuer)/test/state")!, body: nil, timeout: 10, answerLimit: 4 << 20, trust: trust)
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
        pings = try PingRecorder(in: sandbox, tls: world.tlsDirectory)
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
            // The one setting: oidc-agent, rclone, restic and the tool's own requests all trust it.
            "CLOUD_BACKUP_CA_FILE": world.caFile,
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
        XCTAssertTrue(world.issuer.hasPrefix("https://") && world.endpoint.hasPrefix("https://"), "\(world.issuer) \(world.endpoint)")
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
        // With the server's record and lock there too (the harness made the state directory itself).
        assertPrivate(sandbox.root + "/state", includingRoot: false)
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

    /// Every file and directory below `root` (and `root` itself, unless `includingRoot` is false):
    /// directories 0700, regular files 0600, sockets reachable by their owner only.
    func assertPrivate(_ root: String, includingRoot: Bool = true, file: StaticString = #filePath, line: UInt = #line) {
        var paths = includingRoot ? [root] : []
        if let enumerator = FileManager.default.enumerator(atPath: root) {
            paths += enumerator.compactMap { $0 as? String }.map { "\(root)/\($0)" }
        }
        for path in paths {
            var status = stat()
            guard lstat(path, &status) == 0 else { continue }  // gone meanwhile (a lock file)
            let mode = status.st_mode & 0o7777
            switch status.st_mode & S_IFMT {
            case S_IFDIR: XCTAssertEqual(mode, 0o700, "directory \(path) is \(String(mode, radix: 8))", file: file, line: line)
            case S_IFREG: XCTAssertEqual(mode, 0o600, "file \(path) is \(String(mode, radix: 8))", file: file, line: line)
            case S_IFSOCK: XCTAssertEqual(mode & 0o077, 0, "socket \(path) is \(String(mode, radix: 8))", file: file, line: line)
            default: break
            }
        }
    }

    /// One login, checked link by link: the days left as config and the ping say them, the modes of
    /// everything the tool and oidc-agent wrote, a wrong OIDC_PASSWORD while the agent holds the
    /// account (every command), STS refusing the role, and the identity provider stopped.
    /// On the old code: "(29 days)", the account file 0644 and the socket 0777, a wrong password
    /// accepted by config and every job, config's STS failure without STS_ROLE_NAME, and the stopped
    /// provider reported as "oidc-agent has no account infncloud loaded".
    func testLoginIsVerifiedAndEverythingItWritesIsPrivate() throws {
        let state = sandbox.root + "/state"
        let agentConfig = sandbox.root + "/home/.config/oidc-agent"
        // Made by the tool, not by the test harness.
        try FileManager.default.removeItem(atPath: state)
        try FileManager.default.removeItem(atPath: agentConfig)
        let first = try interactive("config")
        XCTAssertEqual(first.code, 0, first.output)
        XCTAssertTrue(first.output.contains("(30 days); `cloud-backup reauth` renews it"), "a fresh 30-day login says 30 days:\n\(first.output)")
        XCTAssertTrue(first.output.contains("✓ storage login: \(world.endpoint)"), first.output)

        // Modes: the state directory, the agent's configuration, rclone's, the socket and its directory.
        let socket = InfnSettings.agentSocket(stateDirectory: state)
        XCTAssertTrue(socket.hasPrefix(InfnSettings.sharedSocketDirectory + "/"), "this test's long name puts the socket under /tmp: \(socket)")
        assertPrivate(state)
        assertPrivate(agentConfig)
        assertPrivate(sandbox.root + "/home/.config/rclone")
        XCTAssertTrue(FileManager.default.fileExists(atPath: agentConfig + "/infncloud"))
        var status = stat()
        XCTAssertEqual(lstat(InfnSettings.sharedSocketDirectory, &status), 0)
        XCTAssertEqual(status.st_mode & 0o777, 0o700)
        XCTAssertEqual(status.st_uid, getuid())
        XCTAssertEqual(lstat(socket, &status), 0)
        XCTAssertEqual(status.st_mode & 0o777, 0o600, "oidc-agent's socket")

        let check = try sandbox.run(["check-refresh-token"])
        XCTAssertEqual(check.status, .exited(0), check.standardError)
        XCTAssertTrue(check.standardError.contains("refresh token: 30 days left (expires "), check.standardError)
        XCTAssertTrue(pings.pings.last { $0.path.contains("44444444") }?.body.hasPrefix("30 days left (expires ") == true)

        // A wrong OIDC_PASSWORD while the agent holds the account: exit 77 before anything is created.
        let wrong = "not-the-agent-password-51c"
        let awsConfig = state + "/aws-config"
        let rcloneConfig = sandbox.root + "/home/.config/rclone/rclone.conf"
        try FileManager.default.removeItem(atPath: awsConfig)
        try FileManager.default.removeItem(atPath: rcloneConfig)
        let before = (try? FileManager.default.subpathsOfDirectory(atPath: state))?.sorted()
        for arguments in [["config"], ["backup", sandbox.data], ["forget", "--keep-last", "1"], ["check"], ["restic", "snapshots"]] {
            let refused = try sandbox.run(arguments, ["OIDC_PASSWORD": wrong])
            XCTAssertEqual(refused.status, .exited(77), "\(arguments): \(refused.standardError)")
            XCTAssertTrue(refused.standardError.contains("OIDC_PASSWORD does not unlock the oidc-agent account infncloud"), "\(arguments): \(refused.standardError)")
            XCTAssertFalse(refused.standardError.contains(wrong))
        }
        let (server, serverLog) = try sandbox.launch(["start-server"], ["OIDC_PASSWORD": wrong], log: "server-wrong-password")
        let serverEnd = waitForExit(server, seconds: 15)
        XCTAssertEqual(serverEnd?.status, .exited(77), sandbox.readLog(serverLog))
        XCTAssertTrue(sandbox.readLog(serverLog).contains("OIDC_PASSWORD does not unlock the oidc-agent account infncloud"), sandbox.readLog(serverLog))
        XCTAssertFalse(FileManager.default.fileExists(atPath: awsConfig), "nothing created")
        XCTAssertFalse(FileManager.default.fileExists(atPath: rcloneConfig), "nothing created")
        XCTAssertEqual((try? FileManager.default.subpathsOfDirectory(atPath: state))?.sorted(), before)
        XCTAssertEqual(pings.pings.last { $0.path.contains("55555555") }?.path, "/ping/55555555-5555-4555-8555-555555555555/77")
        XCTAssertFalse(pings.pings.contains { $0.body.contains(wrong) })
        XCTAssertFalse(agentPIDs().isEmpty, "the agent (holding the account) was running all along")

        // STS refuses the role: config names STS_ROLE_NAME, its value and the other causes.
        let refused = try sandbox.run(["config"], ["STS_ROLE_NAME": "NoSuchRole"])
        XCTAssertEqual(refused.status, .exited(77), refused.standardError)
        for part in ["the storage's STS refused the login token (AccessDenied", "STS_ROLE_NAME=NoSuchRole", "OIDC_AUDIENCE=object",
                     "OIDC_ISSUER_URL=\(world.issuer)"] {
            XCTAssertTrue(refused.standardError.contains(part), "missing «\(part)» in:\n\(refused.standardError)")
        }

        // The identity provider stopped: named, with its address, as unreachable.
        world.stopIdentityProvider()
        var restarted = false
        defer { if !restarted { XCTAssertNoThrow(try world.startIdentityProvider(port: world.idpPort)) } }
        let idpDown = try sandbox.run(["config"])
        XCTAssertEqual(idpDown.status, .exited(77), idpDown.standardError)
        XCTAssertTrue(idpDown.standardError.contains("the identity provider \(world.issuer) cannot be reached"), idpDown.standardError)
        XCTAssertFalse(idpDown.standardError.contains("has no account"), idpDown.standardError)
        // As rclone runs it, for the jobs.
        let credentials = try sandbox.run(["aws-credential-process"], ["OIDC_SOCK": socket])
        XCTAssertEqual(credentials.status, .exited(77), credentials.standardError)
        XCTAssertTrue(credentials.standardError.contains("the identity provider \(world.issuer) cannot be reached"), credentials.standardError)
        // A job: rclone runs the credential process, whose message reaches the job's output and ping.
        let backup = try sandbox.run(["backup", sandbox.data])
        XCTAssertNotEqual(backup.status, .exited(0), backup.standardError)
        XCTAssertTrue(backup.standardError.contains("the identity provider \(world.issuer) cannot be reached"), backup.standardError)
        XCTAssertFalse(backup.standardError.contains("has no account"), backup.standardError)
        try world.startIdentityProvider(port: world.idpPort)
        restarted = true

        // Back to normal: the files come back, private.
        let again = try sandbox.run(["config"])
        XCTAssertEqual(again.status, .exited(0), again.standardError)
        assertPrivate(state)
        assertPrivate(sandbox.root + "/home/.config/rclone")
    }

    /// One setting, CLOUD_BACKUP_CA_FILE, for every TLS client of the chain; a CA that did not sign the
    /// servers' certificates is named with the host it failed for and the setting: exit 77 for the
    /// login (oidc-agent, STS). The account's CA bundle follows the setting, without a new login.
    func testTheCAFileIsTheOneTLSSettingAndAWrongOneIsNamed() throws {
        // Pings under a wrong CA are HttpsPingTests' (each failing one is retried for seconds).
        sandbox.environment.removeValue(forKey: "BACKUP_CHECK_URL")
        let first = try interactive("config")
        XCTAssertEqual(first.code, 0, first.output)
        try sandbox.writeData(files: 2)
        let idp = "127.0.0.1:\(world.idpPort)"
        let rgw = String(world.endpoint.dropFirst("https://".count))

        // A wrong CA for the login: the account (made with the right one) is left as it is.
        let wrong = try sandbox.run(["backup", sandbox.data], ["CLOUD_BACKUP_CA_FILE": world.otherCAFile])
        XCTAssertEqual(wrong.status, .exited(77), wrong.standardError)
        for part in ["oidc-agent cannot use CLOUD_BACKUP_CA_FILE=\(world.otherCAFile): the identity provider \(world.issuer) cannot be trusted",
                     "the certificate of \(idp) is not trusted", "the account is unchanged (it still uses \(world.caFile))"] {
            XCTAssertTrue(wrong.standardError.contains(part), "missing «\(part)» in:\n\(wrong.standardError)")
        }

        // Unset: the system's store, which does not hold the test CA: named the same way.
        let system = try sandbox.run(["backup", sandbox.data], removing: ["CLOUD_BACKUP_CA_FILE"])
        XCTAssertEqual(system.status, .exited(77), system.standardError)
        for part in ["oidc-agent cannot use the system's CA store (CLOUD_BACKUP_CA_FILE is not set): the identity provider \(world.issuer) cannot be trusted",
                     "the certificate of \(idp) is not trusted", "CLOUD_BACKUP_CA_FILE"] {
            XCTAssertTrue(system.standardError.contains(part), "missing «\(part)» in:\n\(system.standardError)")
        }

        // The STS call, as rclone runs the credential process (the agent, holding the account, still
        // trusts the right CA): exit 77 naming the storage's host and the setting.
        let socket = InfnSettings.agentSocket(stateDirectory: "\(sandbox.root)/state")
        let sts = try sandbox.run(["aws-credential-process"], ["OIDC_SOCK": socket, "CLOUD_BACKUP_CA_FILE": world.otherCAFile])
        XCTAssertEqual(sts.status, .exited(77), sts.standardError)
        for part in ["cannot reach the storage's STS at \(world.endpoint)", "the certificate of \(rgw) is not trusted",
                     "CLOUD_BACKUP_CA_FILE=\(world.otherCAFile)"] {
            XCTAssertTrue(sts.standardError.contains(part), "missing «\(part)» in:\n\(sts.standardError)")
        }

        // The same certificates in another file: the account follows the setting, without a login.
        let copy = world.directory + "/ca-copy-\(UUID().uuidString.prefix(4)).pem"
        try FileManager.default.copyItem(atPath: world.caFile, toPath: copy)
        let flows = try world.deviceCodesIssued()
        let moved = try sandbox.run(["backup", sandbox.data], ["CLOUD_BACKUP_CA_FILE": copy])
        XCTAssertEqual(moved.status, .exited(0), moved.standardError)
        XCTAssertTrue(moved.standardError.contains("the oidc-agent account infncloud now verifies the identity provider with CLOUD_BACKUP_CA_FILE=\(copy) (it used \(world.caFile))"),
                      moved.standardError)
        XCTAssertEqual(try world.deviceCodesIssued(), flows, "no new device flow")
        assertPrivate(sandbox.root + "/home/.config/oidc-agent")
        let again = try sandbox.run(["backup", sandbox.data], ["CLOUD_BACKUP_CA_FILE": copy])
        XCTAssertEqual(again.status, .exited(0), again.standardError)
        XCTAssertFalse(again.standardError.contains("now verifies"), "once per change: \(again.standardError)")
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
