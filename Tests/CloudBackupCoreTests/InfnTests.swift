import XCTest
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
        let credentials = try StsExchange.parse(status: 200, body: answer)
        XCTAssertEqual(credentials.accessKeyID, "AKID")
        XCTAssertEqual(credentials.sessionToken, "to&ken")
        XCTAssertEqual(credentials.expiration.timeIntervalSince1970, 1_795_317_300.123, accuracy: 0.01)
        XCTAssertThrowsError(try StsExchange.parse(status: 403, body: "<Error><Code>AccessDenied</Code><Message>nope</Message></Error>")) { error in
            XCTAssertTrue("\(error)".contains("the storage's STS refused the login token (AccessDenied: nope)"), "\(error)")
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 77)
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
            let configuration = try ConfigurationLoader.load(environment: ["AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "pw", "HOME": "/nonexistent"],
                                                             needs: [])
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
        let seven = try run(exp: 1_000_000 + 6.5 * day)
        XCTAssertEqual(seven.0, 1)
        XCTAssertTrue(seven.1.contains("6 days left (expires 1970-01-19T01:46:40Z), fewer than REFRESH_TOKEN_MIN_DAYS=7: run `docker compose run --rm cloud-backup reauth`"), seven.1)
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
