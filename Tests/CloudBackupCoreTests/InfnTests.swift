import XCTest
import TestSupport
@testable import CloudBackupCore

final class InfnUnitTests: XCTestCase {
    func settings() throws -> InfnSettings {
        var problems: [String] = []
        let settings = ConfigurationLoader.infnSettings(user: "alice", bucket: "vm1", environment: [:], password: "pw", problems: &problems)
        XCTAssertEqual(problems, [])
        return try XCTUnwrap(settings)
    }

    func testOidcArgvNeverHoldsThePassword() throws {
        let settings = try settings()
        XCTAssertEqual(OidcCommand.load("infncloud"), ["infncloud", "--pw-env=OIDC_PASSWORD"])
        XCTAssertEqual(OidcCommand.accessToken("infncloud", audience: "object"), ["infncloud", "--aud=object"])
        XCTAssertEqual(OidcCommand.deviceFlow(account: "infncloud", settings: settings, reauthenticate: false),
                       ["infncloud", "--iss=https://iam.cloud.infn.it/", "--scope=openid profile offline_access email", "--flow=device",
                        "--pw-env=OIDC_PASSWORD", "--confirm-default", "--prompt=none", "--no-url-call"])
        XCTAssertEqual(OidcCommand.deviceFlow(account: "infncloud", settings: settings, reauthenticate: true),
                       ["infncloud", "--reauthenticate", "--flow=device", "--pw-env=OIDC_PASSWORD", "--confirm-default", "--prompt=none", "--no-url-call"])
    }

    func testStsFormBodyAndAnswers() throws {
        XCTAssertEqual(StsExchange.formBody(roleName: "IAMaccess", webIdentityToken: "a.b+c/d", durationSeconds: 900),
                       "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A%3Arole%2FIAMaccess&RoleSessionName=IAMaccess&WebIdentityToken=a.b%2Bc%2Fd&DurationSeconds=900")
        let answer = """
        <?xml version="1.0" encoding="UTF-8"?><AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>
        <Credentials><AccessKeyId>AKID</AccessKeyId><SecretAccessKey>SECRET</SecretAccessKey><SessionToken>to&amp;ken</SessionToken>
        <Expiration>2026-11-22T03:15:00.123Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>
        """
        let credentials = try StsExchange.parse(status: 200, body: answer, settings: try settings())
        XCTAssertEqual(credentials.accessKeyID, "AKID")
        XCTAssertEqual(credentials.sessionToken, "to&ken")
        XCTAssertEqual(credentials.expiration.timeIntervalSince1970, 1_795_317_300.123, accuracy: 0.01)
        XCTAssertThrowsError(try StsExchange.parse(status: 403, body: "<Error><Code>AccessDenied</Code><Message>nope</Message></Error>", settings: try settings())) { error in
            XCTAssertTrue("\(error)".contains("the storage's STS refused the login token (AccessDenied: nope)"), "\(error)")
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 77)
        }
    }

    /// RGW 16.2's bare 403 names no cause: the message names every setting that can cause it, with its value.
    func testStsAccessDeniedNamesTheRoleAndTheOtherCauses() throws {
        var problems: [String] = []
        let settings = try XCTUnwrap(ConfigurationLoader.infnSettings(user: "alice", bucket: "vm1", environment: [
            "STS_ROLE_NAME": "NoSuchRole", "OIDC_ISSUER_URL": "https://iam.example.org/", "S3_ENDPOINT_URL": "https://rgw.example.org/"],
            password: "pw", problems: &problems))
        XCTAssertThrowsError(try StsExchange.parse(status: 403, body: "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message></Message><RequestId>tx1</RequestId></Error>",
                                                   settings: settings)) { error in
            let text = "\(error)"
            for part in ["the storage's STS refused the login token (AccessDenied) at https://rgw.example.org/", "STS_ROLE_NAME=NoSuchRole",
                         "OIDC_AUDIENCE=object", "OIDC_ISSUER_URL=https://iam.example.org/", "revoked or expired", "cloud-backup reauth"] {
                XCTAssertTrue(text.contains(part), "missing «\(part)» in: \(text)")
            }
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 77)
        }
        XCTAssertThrowsError(try StsExchange.parse(status: 400, body: "<Error><Code>InvalidParameterValue</Code><Message>bad duration</Message></Error>",
                                                   settings: settings)) { error in
            XCTAssertTrue("\(error)".contains("(InvalidParameterValue: bad duration)"), "\(error)")
            XCTAssertTrue("\(error)".contains("STS_ROLE_NAME=NoSuchRole"), "\(error)")
        }
    }

    func testCredentialProcessOutputExpiresEarly() throws {
        let now = Date(timeIntervalSince1970: 1_000_000)
        let credentials = TemporaryCredentials(accessKeyID: "A", secretAccessKey: "S", sessionToken: "T", expiration: now.addingTimeInterval(900))
        let json = StsExchange.credentialProcessJSON(credentials, marginSeconds: 300, now: now)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(object["Version"] as? Int, 1)
        XCTAssertEqual(object["AccessKeyId"] as? String, "A")
        XCTAssertEqual(object["Expiration"] as? String, "1970-01-12T13:56:40Z")  // now + 600 s
        let late = StsExchange.credentialProcessJSON(credentials, marginSeconds: 899, now: now)
        XCTAssertTrue(late.contains("\"Expiration\":\"1970-01-12T13:47:10Z\""), late)  // never less than 30 s ahead
    }

    func testRefreshTokenLifetimes() {
        func token(_ payload: String) -> String {
            let encoded = Data(payload.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            return "eyJhbGciOiJub25lIn0.\(encoded)."
        }
        XCTAssertEqual(RefreshTokenLifetime.of(token(#"{"sub":"a","exp":1800000000}"#)), .expires(Date(timeIntervalSince1970: 1_800_000_000)))
        XCTAssertEqual(RefreshTokenLifetime.of(token(#"{"sub":"a"}"#)), .never)
        XCTAssertEqual(RefreshTokenLifetime.of("opaque-token"), .unreadable("the refresh token is not a JWT (no payload to read its expiry from)"))
        XCTAssertEqual(RefreshTokenLifetime.of("a.bm90IGpzb24.c"), .unreadable("the refresh token's payload is not JSON"))
    }

    func testRcloneSectionIsReplacedAndOthersKept() {
        let original = "[mine]\ntype = local\n\n[infncloud]\ntype = s3\nendpoint = old\n\n[other]\ntype = sftp\n"
        let updated = InfnSetup.replacingSection("infncloud", with: ["type = s3", "endpoint = new"], in: original)
        XCTAssertEqual(updated, "[mine]\ntype = local\n\n[infncloud]\ntype = s3\nendpoint = new\n[other]\ntype = sftp\n")
        XCTAssertEqual(InfnSetup.replacingSection("infncloud", with: ["a = b"], in: ""), "[infncloud]\na = b\n")
        XCTAssertEqual(InfnSetup.replacingSection("infncloud", with: ["a = b"], in: "[x]\ny = z\n"), "[x]\ny = z\n\n[infncloud]\na = b\n")
    }

    func testFilesAreWrittenOnceWithMode0600() throws {
        let directory = NSTemporaryDirectory() + "infn-files-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let paths = InfnSettings.Paths(agentSocket: directory + "/sock", awsConfig: directory + "/aws-config", rcloneConfig: directory + "/rclone/rclone.conf")
        XCTAssertTrue(try InfnSetup.writeFiles(settings: try settings(), paths: paths, executable: "/usr/local/bin/cloud-backup"))
        XCTAssertFalse(try InfnSetup.writeFiles(settings: try settings(), paths: paths, executable: "/usr/local/bin/cloud-backup"), "idempotent")
        let aws = try String(contentsOfFile: paths.awsConfig, encoding: .utf8)
        XCTAssertEqual(aws, "[profile cloud-backup]\ncredential_process = /usr/local/bin/cloud-backup aws-credential-process\n")
        let rclone = try String(contentsOfFile: paths.rcloneConfig, encoding: .utf8)
        XCTAssertEqual(rclone, "[infncloud]\ntype = s3\nprovider = Ceph\nenv_auth = true\nendpoint = https://rgw.cloud.infn.it/\n")
        for path in [paths.awsConfig, paths.rcloneConfig] {
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
            XCTAssertEqual(mode, 0o600, path)
        }
    }

    func testCheckRefreshTokenThresholds() throws {
        func run(exp: TimeInterval?) throws -> (Int32, String) {
            let payload = exp.map { #"{"sub":"a","exp":\#(Int($0))}"# } ?? #"{"sub":"a"}"#
            let encoded = Data(payload.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
            let runner = FakeProcessRunner { spec, _ in
                spec.executable == "oidc-gen"
                    ? ProcessResult(status: .exited(0), standardOutput: #"{"refresh_token":"eyJhbGciOiJub25lIn0.\#(encoded).","name":"infncloud"}"#)
                    : ProcessResult(status: .exited(1))
            }
            let world = try AccountDirectory()
            defer { world.remove() }
            let configuration = try ConfigurationLoader.load(environment: world.environment, needs: [])
            let lines = LineCollector()
            let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                     transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }, hostName: "vm", sleep: { _ in })
            let code = InfnLogin(configuration: configuration, context: context, interactive: false).checkRefreshToken(now: Date(timeIntervalSince1970: 1_000_000))
            return (code, lines.text)
        }
        let day: TimeInterval = 86_400
        let thirty = try run(exp: 1_000_000 + 30 * day)
        XCTAssertEqual(thirty.0, 0)
        XCTAssertTrue(thirty.1.contains("refresh token: 30 days left (expires 1970-02-11T13:46:40Z)"), thirty.1)
        // Failed on the old code ("29 days left"): days are rounded to the nearest day, not down.
        let fresh = try run(exp: 1_000_000 + 29.9 * day)
        XCTAssertEqual(fresh.0, 0)
        XCTAssertTrue(fresh.1.contains("refresh token: 30 days left (expires "), fresh.1)
        let seven = try run(exp: 1_000_000 + 6.4 * day)
        XCTAssertEqual(seven.0, 1)
        XCTAssertTrue(seven.1.contains("6 days left (expires 1970-01-18T23:22:40Z), fewer than REFRESH_TOKEN_MIN_DAYS=7: run `docker compose run --rm cloud-backup reauth`"), seven.1)
        let almostSeven = try run(exp: 1_000_000 + 6.6 * day)
        XCTAssertEqual(almostSeven.0, 0, "7 days left, as the message says, is not fewer than 7")
        XCTAssertTrue(almostSeven.1.contains("refresh token: 7 days left"), almostSeven.1)
        let hours = try run(exp: 1_000_000 + 0.2 * day)
        XCTAssertEqual(hours.0, 1)
        XCTAssertTrue(hours.1.contains("less than a day left"), hours.1)
        let expired = try run(exp: 1_000_000 - day)
        XCTAssertEqual(expired.0, 1)
        XCTAssertTrue(expired.1.contains("the refresh token has expired"), expired.1)
        let never = try run(exp: nil)
        XCTAssertEqual(never.0, 0)
        XCTAssertTrue(never.1.contains("the refresh token does not expire"), never.1)
    }
}

final class AgentSocketTests: XCTestCase {
    func testLongStateDirectoriesGetAShortSocketPath() {
        XCTAssertEqual(InfnSettings.agentSocket(stateDirectory: "/home/user/.local/state/cloud-backup"), "/home/user/.local/state/cloud-backup/oidc-agent.sock")
        let long = "/tmp/" + String(repeating: "x", count: 120)
        let socket = InfnSettings.agentSocket(stateDirectory: long)
        XCTAssertTrue(socket.hasPrefix("/tmp/cloud-backup-"), socket)
        XCTAssertLessThan(socket.utf8.count, 100)
        XCTAssertEqual(socket, InfnSettings.agentSocket(stateDirectory: long), "every command derives the same path")
        XCTAssertNotEqual(socket, InfnSettings.agentSocket(stateDirectory: long + "y"))
    }
}

/// A temporary oidc-agent configuration directory holding an (empty) account file `infncloud`, and
/// the environment of an INFN configuration that uses it.
struct AccountDirectory {
    let root: String
    var configDirectory: String { "\(root)/oidc-agent" }
    var environment: [String: String] {
        ["AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "agent-pw-93xq", "HOME": "\(root)/home", "CLOUD_BACKUP_STATE_DIR": "\(root)/state",
         "OIDC_CONFIG_DIR": configDirectory, "RESTIC_PASSWORD": "repo-pw"]
    }

    init() throws {
        root = NSTemporaryDirectory() + "infn-unit-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: configDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        _ = FileManager.default.createFile(atPath: "\(configDirectory)/infncloud", contents: Data("encrypted".utf8), attributes: [.posixPermissions: 0o600])
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }

    func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int
    }
}

final class InfnLoginDiagnosisTests: XCTestCase {
    func context(_ runner: FakeProcessRunner, _ lines: LineCollector, transport: HTTPTransport = HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }) -> JobContext {
        JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }), transport: transport,
                   hostName: "vm", sleep: { _ in })
    }

    /// Failed on the old code: an agent that already held the account took any OIDC_PASSWORD (oidc-add
    /// was skipped), so every job and `config` went on. Now the stored account is decrypted every time.
    func testAWrongPasswordIsRefusedWhileTheAgentHoldsTheAccount() throws {
        let world = try AccountDirectory()
        defer { world.remove() }
        let runner = FakeProcessRunner { spec, _ in
            switch spec.executable {
            case "oidc-agent": return ProcessResult(status: .exited(0), standardOutput: #"{"version":"4.2.6","loaded_accounts":["infncloud"]}"#)
            case "oidc-gen": return ProcessResult(status: .exited(1), standardError: "Error: reached maximum number of tries\nError: reached maximum number of tries\n")
            default: return ProcessResult(status: .exited(0))
            }
        }
        let configuration = try ConfigurationLoader.load(environment: world.environment, needs: [])
        let lines = LineCollector()
        XCTAssertThrowsError(try InfnSetup.prepare(configuration, context: context(runner, lines))) { error in
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 77)
            XCTAssertTrue("\(error)".contains("OIDC_PASSWORD does not unlock the oidc-agent account infncloud"), "\(error)")
        }
        XCTAssertEqual(runner.commands, ["oidc-gen -p infncloud --pw-env=OIDC_PASSWORD"], "verified first, nothing else run")
        XCTAssertFalse(runner.specs[0].arguments.joined().contains("agent-pw-93xq"), "the password travels in the environment")
        XCTAssertEqual(runner.specs[0].environment["OIDC_PASSWORD"], "agent-pw-93xq")
        XCTAssertFalse(FileManager.default.fileExists(atPath: configuration.infnPaths.awsConfig), "nothing created")
        XCTAssertFalse(FileManager.default.fileExists(atPath: configuration.infnPaths.rcloneConfig), "nothing created")

        let code = InfnLogin(configuration: configuration, context: context(runner, lines), interactive: true).configure()
        XCTAssertEqual(code, 77)
        XCTAssertTrue(lines.text.contains("OIDC_PASSWORD does not unlock"), lines.text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: configuration.infnPaths.awsConfig), "config creates nothing either")
        XCTAssertEqual(InfnLogin(configuration: configuration, context: context(runner, lines), interactive: true).reauthenticate(), 77)
    }

    func testTheRightPasswordLoadsNothingTwice() throws {
        let world = try AccountDirectory()
        defer { world.remove() }
        let runner = FakeProcessRunner { spec, _ in
            switch spec.executable {
            case "oidc-agent": return ProcessResult(status: .exited(0), standardOutput: #"{"loaded_accounts":["infncloud"]}"#)
            case "oidc-gen": return ProcessResult(status: .exited(0), standardOutput: #"{"name":"infncloud","refresh_token":"x.e30."}"#)
            default: return ProcessResult(status: .exited(1))
            }
        }
        let configuration = try ConfigurationLoader.load(environment: world.environment, needs: [])
        try InfnSetup.prepare(configuration, context: context(runner, LineCollector()))
        XCTAssertEqual(runner.commands.filter { $0.hasPrefix("oidc-add") }, [], "already loaded")
        XCTAssertEqual(runner.commands.first, "oidc-gen -p infncloud --pw-env=OIDC_PASSWORD")
        XCTAssertEqual(world.mode(configuration.infnPaths.awsConfig), 0o600)
    }

    /// Failed on the old code, which said "oidc-agent has no account infncloud loaded": oidc-token
    /// 4.2.6 says "the other party disconnected" when the provider cannot be reached.
    func testAnUnreachableIdentityProviderIsNamed() throws {
        let port = try freeLoopbackPort()
        let world = try AccountDirectory()
        defer { world.remove() }
        let runner = FakeProcessRunner { spec, _ in
            switch spec.executable {
            case "oidc-agent": return ProcessResult(status: .exited(0), standardOutput: #"{"loaded_accounts":["infncloud"]}"#)
            case "oidc-token": return ProcessResult(status: .exited(1), standardError: "Error: the other party disconnected\n")
            default: return ProcessResult(status: .exited(1))
            }
        }
        var environment = world.environment
        environment["OIDC_ISSUER_URL"] = "http://127.0.0.1:\(port)/"
        let configuration = try ConfigurationLoader.load(environment: environment, needs: [])
        let agent = try XCTUnwrap(InfnSetup.agent(configuration, context: context(runner, LineCollector())))
        XCTAssertThrowsError(try agent.accessToken()) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("the identity provider http://127.0.0.1:\(port)/ cannot be reached"), text)
            XCTAssertFalse(text.contains("no account"), text)
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 77)
        }
    }

    func testOidcTokenFailuresAreToldApart() throws {
        let world = try AccountDirectory()
        defer { world.remove() }
        var environment = world.environment
        environment["OIDC_ISSUER_URL"] = "http://127.0.0.1:\(try freeLoopbackPort())/"
        func failure(status: String?, token: String) throws -> String {
            let runner = FakeProcessRunner { spec, _ in
                switch spec.executable {
                case "oidc-agent": return status.map { ProcessResult(status: .exited(0), standardOutput: $0) } ?? ProcessResult(status: .exited(1))
                default: return ProcessResult(status: .exited(1), standardError: token)
                }
            }
            let configuration = try ConfigurationLoader.load(environment: environment, needs: [])
            let agent = try XCTUnwrap(InfnSetup.agent(configuration, context: context(runner, LineCollector())))
            return "\(agent.accessTokenFailure(token))"
        }
        XCTAssertTrue(try failure(status: #"{"loaded_accounts":[]}"#, token: "Error: account not loaded").contains("has no account infncloud loaded"))
        XCTAssertTrue(try failure(status: nil, token: "Error: did not receive any response").contains("oidc-agent does not answer on"))
        XCTAssertTrue(try failure(status: #"{"loaded_accounts":[]}"#, token: "Error: the other party disconnected").contains("has no account infncloud loaded"))
    }

    /// Failed on the old code: OIDC_TOKEN_CHECK_URL with another destination was never pinged, so its
    /// check stayed "new" for ever.
    func testCheckRefreshTokenWithoutInfnPingsNothingToCheck() throws {
        final class Requests: @unchecked Sendable {
            let lock = NSLock()
            var items: [(URL, String?)] = []
            func add(_ url: URL, _ body: Data?) { lock.lock(); items.append((url, body.map { String(decoding: $0, as: UTF8.self) })); lock.unlock() }
        }
        let requests = Requests()
        let transport = HTTPTransport { url, body, _ in
            requests.add(url, body)
            return .init(status: 200, headers: [:])
        }
        let environment = ["RESTIC_PASSWORD": "pw", "HOME": "/nonexistent", "CLOUD_BACKUP_STATE_DIR": "/nonexistent/state",
                           "OIDC_TOKEN_CHECK_URL": "https://hc.example/ping/44444444-4444-4444-8444-444444444444"]
        let configuration = try ConfigurationLoader.load(environment: environment, needs: [])
        let lines = LineCollector()
        let context = JobContext(environment: environment, runner: FakeProcessRunner { _, _ in ProcessResult(status: .exited(1)) }, signals: SignalMonitor(),
                                 log: Logger(sink: { lines.add($0) }), transport: transport, hostName: "vm", sleep: { _ in })
        XCTAssertEqual(InfnLogin(configuration: configuration, context: context, interactive: false).checkRefreshToken(), 0)
        XCTAssertEqual(requests.items.map { $0.0.path }, ["/ping/44444444-4444-4444-8444-444444444444/start", "/ping/44444444-4444-4444-8444-444444444444/0"])
        XCTAssertTrue(requests.items.last?.1?.hasPrefix("nothing to check:") == true, "\(requests.items)")
        XCTAssertFalse(lines.text.contains("44444444"), "the check URL stays out of the log")

        // Not a ping URL: a warning, and still exit 0.
        var bad = environment
        bad["OIDC_TOKEN_CHECK_URL"] = "not a url"
        let badLines = LineCollector()
        let badContext = JobContext(environment: bad, runner: FakeProcessRunner { _, _ in ProcessResult(status: .exited(1)) }, signals: SignalMonitor(),
                                    log: Logger(sink: { badLines.add($0) }), transport: transport, hostName: "vm", sleep: { _ in })
        XCTAssertEqual(InfnLogin(configuration: configuration, context: badContext, interactive: false).checkRefreshToken(), 0)
        XCTAssertTrue(badLines.text.contains("OIDC_TOKEN_CHECK_URL: expected an http(s) Healthchecks ping URL"), badLines.text)
        XCTAssertEqual(requests.items.count, 2, "no ping to an invalid URL")
    }

    func testDaysLeftAreRoundedToTheNearestDay() {
        let now = Date(timeIntervalSince1970: 1_000_000)
        func days(_ count: Double) -> Int { RefreshTokenLifetime.daysLeft(until: now.addingTimeInterval(count * 86_400), now: now) }
        XCTAssertEqual(days(30), 30)
        XCTAssertEqual(days(29.9), 30)
        XCTAssertEqual(days(29.4), 29)
        XCTAssertEqual(days(0.4), 0)
        XCTAssertEqual(days(-3), 0)
        XCTAssertEqual(RefreshTokenLifetime.describe(daysLeft: 30), "30 days")
        XCTAssertEqual(RefreshTokenLifetime.describe(daysLeft: 1), "1 day")
        XCTAssertEqual(RefreshTokenLifetime.describe(daysLeft: 0), "less than a day")
    }
}

final class InfnFileModeTests: XCTestCase {
    var root: String!

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "infn-modes-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
    }

    func mode(_ path: String) -> Int? {
        var status = stat()
        return lstat(path, &status) == 0 ? Int(status.st_mode & 0o7777) : nil
    }

    func testTheSharedSocketDirectoryIsCreatedPrivate() throws {
        let directory = root + "/cloud-backup-\(getuid())"
        try OidcAgent.prepareSocketDirectory(directory, shared: true)
        XCTAssertEqual(mode(directory), 0o700)
        try OidcAgent.prepareSocketDirectory(directory, shared: true)  // ours and private: used again
    }

    func testASharedSocketDirectoryOthersCanEnterIsRefused() throws {
        let directory = root + "/wide"
        XCTAssertEqual(mkdir(directory, 0o755), 0)
        chmod(directory, 0o755)
        XCTAssertThrowsError(try OidcAgent.prepareSocketDirectory(directory, shared: true)) { error in
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 77)
            XCTAssertTrue("\(error)".contains("refusing to put oidc-agent's socket in \(directory): its mode is 755"), "\(error)")
            XCTAssertTrue("\(error)".contains("remove \(directory)"), "\(error)")
        }
        XCTAssertEqual(mode(directory), 0o755, "refused, not changed")
    }

    func testASharedSocketDirectoryOfAnotherUserIsRefused() throws {
        let directory = root + "/theirs"
        XCTAssertEqual(mkdir(directory, 0o700), 0)
        if getuid() == 0 {
            XCTAssertEqual(chown(directory, 65534, 65534), 0)
            XCTAssertThrowsError(try OidcAgent.prepareSocketDirectory(directory, shared: true)) { error in
                XCTAssertTrue("\(error)".contains("it belongs to another user (uid 65534)"), "\(error)")
            }
        }
        var status = stat()
        XCTAssertEqual(lstat(directory, &status), 0)
        XCTAssertEqual(OidcAgent.insecurity(of: status, expectedOwner: status.st_uid &+ 1), "it belongs to another user (uid \(status.st_uid))")
        let link = root + "/link"
        XCTAssertEqual(symlink(root, link), 0)
        XCTAssertThrowsError(try OidcAgent.prepareSocketDirectory(link, shared: true)) { error in
            XCTAssertTrue("\(error)".contains("it is a symbolic link"), "\(error)")
        }
    }

    /// Failed on the old code (exit 70, "This is a bug"): a directory that cannot be created is a
    /// plain write error that names it.
    func testASocketDirectoryThatCannotBeCreatedIsAClearError() throws {
        let file = root + "/file"
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data()))
        for shared in [true, false] {
            XCTAssertThrowsError(try OidcAgent.prepareSocketDirectory(file + "/sub", shared: shared)) { error in
                XCTAssertEqual((error as? CloudBackupError)?.exitCode, 73, "\(error)")
                XCTAssertTrue("\(error)".contains("cannot write \(file)/sub: cannot create the directory for oidc-agent's socket"), "\(error)")
                XCTAssertFalse("\(error)".contains("bug"), "\(error)")
            }
        }
        // Through the agent, as every command meets it.
        let world = try AccountDirectory()
        defer { world.remove() }
        var environment = world.environment
        environment["CLOUD_BACKUP_STATE_DIR"] = file + "/state"
        let configuration = try ConfigurationLoader.load(environment: environment, needs: [])
        let agent = try XCTUnwrap(InfnSetup.agent(configuration, context: JobContext(environment: [:], runner: FakeProcessRunner { _, _ in ProcessResult(status: .exited(1)) },
                                                                                     signals: SignalMonitor(), log: Logger(sink: { _ in }))))
        XCTAssertThrowsError(try agent.ensureRunning()) { error in
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 73, "\(error)")
        }
    }

    /// oidc-gen writes the account and issuer.config with the umask (0644): made 0600, in a 0700 directory.
    func testTheAgentsConfigurationIsMadePrivate() throws {
        let directory = root + "/oidc-agent"
        XCTAssertEqual(mkdir(directory, 0o755), 0)
        chmod(directory, 0o755)
        for name in ["infncloud", "issuer.config"] {
            XCTAssertTrue(FileManager.default.createFile(atPath: "\(directory)/\(name)", contents: Data("x".utf8), attributes: [.posixPermissions: 0o644]))
        }
        let outside = root + "/outside"
        XCTAssertTrue(FileManager.default.createFile(atPath: outside, contents: Data(), attributes: [.posixPermissions: 0o644]))
        XCTAssertEqual(symlink(outside, directory + "/link"), 0)
        try OidcAgent.securePrivateDirectory(directory)
        XCTAssertEqual(mode(directory), 0o700)
        XCTAssertEqual(mode(directory + "/infncloud"), 0o600)
        XCTAssertEqual(mode(directory + "/issuer.config"), 0o600)
        XCTAssertEqual(mode(outside), 0o644, "never through a symbolic link")
        // Missing: created private.
        try OidcAgent.securePrivateDirectory(root + "/new/oidc-agent")
        XCTAssertEqual(mode(root + "/new/oidc-agent"), 0o700)
    }

    func testFilesOfAnOlderVersionAreMadePrivate() throws {
        var problems: [String] = []
        let settings = try XCTUnwrap(ConfigurationLoader.infnSettings(user: "alice", bucket: "vm1", environment: [:], password: "pw", problems: &problems))
        let paths = InfnSettings.Paths(agentSocket: root + "/sock", awsConfig: root + "/aws-config", rcloneConfig: root + "/rclone.conf")
        try InfnSetup.writeFiles(settings: settings, paths: paths, executable: "/usr/local/bin/cloud-backup")
        chmod(paths.awsConfig, 0o644)
        XCTAssertFalse(try InfnSetup.writeFiles(settings: settings, paths: paths, executable: "/usr/local/bin/cloud-backup"))
        XCTAssertEqual(mode(paths.awsConfig), 0o600)
    }
}

