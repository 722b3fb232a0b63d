import XCTest
@testable import CloudBackupCore

final class ConfigurationTests: XCTestCase {
    let base = ["HOME": "/home/user", "PATH": "/usr/bin:/bin"]

    func load(_ extra: [String: String], needs: ConfigurationNeeds = [.repositoryPassword],
              files: [String: String] = [:]) throws -> Configuration {
        try ConfigurationLoader.load(environment: base.merging(extra) { $1 }, needs: needs) { path in
            guard let content = files[path] else { throw CocoaError(.fileReadNoSuchFile) }
            return content
        }
    }

    func problems(_ extra: [String: String], needs: ConfigurationNeeds = [.repositoryPassword], files: [String: String] = [:]) -> [String] {
        do {
            _ = try load(extra, needs: needs, files: files)
            XCTFail("expected a configuration error")
            return []
        } catch CloudBackupError.configuration(let problems) {
            return problems
        } catch {
            XCTFail("unexpected error \(error)")
            return []
        }
    }

    func testDefaultsToALocalDirectoryUnderTheStateDirectory() throws {
        let configuration = try load(["RESTIC_PASSWORD": "pw"])
        XCTAssertEqual(configuration.destination, .localDirectory("/home/user/.local/state/cloud-backup/repository", isDefault: true))
        XCTAssertEqual(configuration.restPort, 8080)
        XCTAssertEqual(configuration.lockWaitSeconds, 900)
        XCTAssertEqual(configuration.stopGraceSeconds, 8)
        XCTAssertNil(configuration.restCredentials)
        XCTAssertFalse(configuration.appendOnly)
        XCTAssertEqual(configuration.resticPassword, .value("pw"))
    }

    func testStateDirectoryFollowsTheVariableThenXDG() throws {
        XCTAssertEqual(try load(["RESTIC_PASSWORD": "pw", "XDG_STATE_HOME": "/xdg"]).stateDirectory, "/xdg/cloud-backup")
        XCTAssertEqual(try load(["RESTIC_PASSWORD": "pw", "XDG_STATE_HOME": "/xdg", "CLOUD_BACKUP_STATE_DIR": "/s"]).stateDirectory, "/s")
    }

    func testDestinationPrecedence() throws {
        let both = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "s3remote:bucket/path", "AAI_USER": "alice", "BACKUP_BUCKET": "b"])
        XCTAssertEqual(both.destination, .rcloneRemote("s3remote:bucket/path"))
        XCTAssertEqual(both.destination.directResticRepository, "rclone:s3remote:bucket/path")
        let infn = try load(["RESTIC_PASSWORD": "pw", "AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "agent-pw"])
        XCTAssertEqual(infn.destination, .infnCloud(user: "alice", bucket: "vm1"))
        XCTAssertEqual(infn.destination.rclonePath, "infncloud:/alice/vm1")
        let local = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "/srv/backups/"])
        XCTAssertEqual(local.destination, .localDirectory("/srv/backups", isDefault: false))
        XCTAssertEqual(local.destination.directResticRepository, "/srv/backups")
        let onTheFly = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": ":s3,provider=Ceph:bucket"])
        XCTAssertEqual(onTheFly.destination, .rcloneRemote(":s3,provider=Ceph:bucket"))
    }

    func testEmptyValuesCountAsUnset() throws {
        let configuration = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "", "RESTIC_REST_PORT": "", "BACKUP_CHECK_URL": ""])
        XCTAssertTrue(configuration.localRepositoryIsDefault)
        XCTAssertEqual(configuration.restPort, 8080)
        XCTAssertNil(configuration.backupCheckURL)
    }

    func testEveryProblemIsReportedAtOnce() {
        let found = problems([
            "RESTIC_REST_PORT": "80800",
            "BACKUP_CHECK_URL": "ftp://example.org/x",
            "FORGET_CHECK_URL": "not a url",
            "RESTIC_REST_USERNAME": "admin",
            "LOCK_WAIT_SECONDS": "-5",
            "STOP_GRACE_SECONDS": "soon",
            "RESTIC_REST_APPEND_ONLY": "maybe",
            "BACKUP_REMOTE": "relative/dir",
            "PING_TIMEOUT_SECONDS": "0",
        ])
        let expected = ["RESTIC_PASSWORD is not set", "RESTIC_REST_PORT=80800", "BACKUP_CHECK_URL:", "FORGET_CHECK_URL:",
                        "RESTIC_REST_USERNAME is set but RESTIC_REST_PASSWORD is not", "LOCK_WAIT_SECONDS=-5",
                        "STOP_GRACE_SECONDS=soon", "RESTIC_REST_APPEND_ONLY=maybe", "BACKUP_REMOTE=relative/dir",
                        "PING_TIMEOUT_SECONDS=0"]
        for prefix in expected {
            XCTAssertTrue(found.contains { $0.hasPrefix(prefix) }, "missing a problem starting with \(prefix) in \(found)")
        }
        XCTAssertEqual(found.count, expected.count, "\(found)")
    }

    func testPingURLProblemsDoNotEchoTheURL() {
        let found = problems(["RESTIC_PASSWORD": "pw", "BACKUP_CHECK_URL": "htps://secret-uuid-value"])
        XCTAssertEqual(found.count, 1)
        XCTAssertFalse(found[0].contains("secret-uuid-value"))
    }

    func testPasswordIsNotNeededToServe() throws {
        XCTAssertNil(try load([:], needs: []).resticPassword)
    }

    func testPasswordWaysAreExclusive() {
        let found = problems(["RESTIC_PASSWORD": "a", "RESTIC_PASSWORD_FILE": "/run/secrets/pw"], files: ["/run/secrets/pw": "b"])
        XCTAssertTrue(found[0].contains("set only one way"), "\(found)")
    }

    func testSecretsFromFiles() throws {
        let configuration = try load([
            "RESTIC_PASSWORD_FILE": "/run/secrets/pw",
            "RESTIC_REST_USERNAME": "backup",
            "RESTIC_REST_PASSWORD_FILE": "/run/secrets/rest",
            "BACKUP_CHECK_URL_FILE": "/run/secrets/url",
        ], files: ["/run/secrets/pw": "repo-secret\n", "/run/secrets/rest": "rest-secret\n", "/run/secrets/url": "https://hc-ping.com/0f2d\n"])
        XCTAssertEqual(configuration.resticPassword, .file("/run/secrets/pw"))
        XCTAssertEqual(configuration.restCredentials, RestCredentials(username: "backup", password: "rest-secret"))
        XCTAssertEqual(configuration.backupCheckURL?.absoluteString, "https://hc-ping.com/0f2d")
        XCTAssertTrue(configuration.secrets.contains("repo-secret"))
        XCTAssertTrue(configuration.secrets.contains("rest-secret"))
        XCTAssertNil(configuration.childEnvironment["RESTIC_REST_PASSWORD_FILE"], "our own _FILE variables are not passed on")
    }

    func testSecretFileProblems() {
        let found = problems([
            "RESTIC_PASSWORD_FILE": "/missing",
            "RESTIC_REST_USERNAME": "u",
            "RESTIC_REST_PASSWORD": "p1",
            "RESTIC_REST_PASSWORD_FILE": "/run/secrets/rest",
            "FORGET_CHECK_URL_FILE": "/empty",
        ], files: ["/run/secrets/rest": "p2", "/empty": "\n"])
        XCTAssertTrue(found.contains { $0.hasPrefix("RESTIC_PASSWORD_FILE=/missing: cannot read the file") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("RESTIC_REST_PASSWORD and RESTIC_REST_PASSWORD_FILE are both set") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("FORGET_CHECK_URL_FILE=/empty: the file is empty") }, "\(found)")
    }

    func testInfnVariablesMustComeTogether() {
        XCTAssertTrue(problems(["RESTIC_PASSWORD": "pw", "AAI_USER": "alice"])[0].hasPrefix("AAI_USER is set but BACKUP_BUCKET is not"))
        XCTAssertTrue(problems(["RESTIC_PASSWORD": "pw", "BACKUP_BUCKET": "b"])[0].hasPrefix("BACKUP_BUCKET is set but AAI_USER is not"))
        XCTAssertTrue(problems(["RESTIC_PASSWORD": "pw", "AAI_USER": "a/b", "BACKUP_BUCKET": "/x"]).count == 2)
        XCTAssertTrue(problems(["RESTIC_PASSWORD": "pw", "AAI_USER": "alice", "BACKUP_BUCKET": "b"])[0].hasPrefix("OIDC_PASSWORD is not set"))
    }

    func testInfnDefaultsOverridesAndChildEnvironment() throws {
        let configuration = try load(["RESTIC_PASSWORD": "pw", "AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "agent-pw",
                                      "AWS_ACCESS_KEY_ID": "stray", "CLOUD_BACKUP_STATE_DIR": "/state"])
        let infn = try XCTUnwrap(configuration.infn)
        XCTAssertEqual(infn.issuer.absoluteString, "https://iam.cloud.infn.it/")
        XCTAssertEqual(infn.s3Endpoint.absoluteString, "https://rgw.cloud.infn.it/")
        XCTAssertEqual(infn.roleName, "IAMaccess")
        XCTAssertEqual(infn.audience, "object")
        XCTAssertEqual(infn.accountName, "infncloud")
        XCTAssertEqual(infn.stsDurationSeconds, 900)
        XCTAssertEqual(infn.refreshTokenMinimumDays, 7)
        let child = configuration.childEnvironment
        XCTAssertEqual(child["OIDC_SOCK"], "/state/oidc-agent.sock")
        XCTAssertEqual(child["AWS_CONFIG_FILE"], "/state/aws-config")
        XCTAssertEqual(child["AWS_PROFILE"], "cloud-backup")
        XCTAssertNil(child["AWS_ACCESS_KEY_ID"], "stray keys would win over the profile")
        XCTAssertNil(child["OIDC_PASSWORD"], "only oidc-agent's commands get the password")
        XCTAssertTrue(configuration.secrets.contains("agent-pw"))

        let overridden = try load(["RESTIC_PASSWORD": "pw", "AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "agent-pw",
                                   "OIDC_ISSUER_URL": "http://127.0.0.1:9000/", "S3_ENDPOINT_URL": "http://127.0.0.1:7480",
                                   "STS_ROLE_NAME": "r", "OIDC_AUDIENCE": "aud", "OIDC_ACCOUNT": "acct", "STS_DURATION_SECONDS": "3600"])
        XCTAssertEqual(overridden.infn?.issuer.absoluteString, "http://127.0.0.1:9000/")
        XCTAssertEqual(overridden.childEnvironment["STS_DURATION_SECONDS"], "3600")
    }

    func testBadInfnValues() {
        let found = problems(["RESTIC_PASSWORD": "pw", "AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "agent-pw",
                              "OIDC_ISSUER_URL": "iam.example", "STS_DURATION_SECONDS": "60", "OIDC_ACCOUNT": "a b",
                              "REFRESH_TOKEN_MIN_DAYS": "soon", "OIDC_TOKEN_CHECK_URL": "nope"])
        for prefix in ["OIDC_ISSUER_URL=iam.example", "STS_DURATION_SECONDS=60", "OIDC_ACCOUNT=a b", "REFRESH_TOKEN_MIN_DAYS=soon", "OIDC_TOKEN_CHECK_URL:"] {
            XCTAssertTrue(found.contains { $0.hasPrefix(prefix) }, "missing \(prefix) in \(found)")
        }
    }

    func testRcloneConfigMustExistForANamedRemote() {
        let found = problems(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "r:b", "RCLONE_CONFIG": "/nonexistent/rclone.conf"])
        XCTAssertTrue(found[0].hasPrefix("RCLONE_CONFIG=/nonexistent/rclone.conf: the file does not exist"), "\(found)")
    }

    func testUsernameWithColonIsRefused() {
        XCTAssertTrue(problems(["RESTIC_REST_USERNAME": "a:b", "RESTIC_REST_PASSWORD": "p"], needs: [])[0].contains("must not contain ':'"))
    }

    func testChildEnvironmentDropsAWSCABundle() throws {
        let configuration = try load(["RESTIC_PASSWORD": "pw", "AWS_CA_BUNDLE": "/etc/ssl/x.pem"])
        XCTAssertNil(configuration.childEnvironment["AWS_CA_BUNDLE"])
        XCTAssertEqual(configuration.childEnvironment["RESTIC_PASSWORD"], "pw")
    }

    func testHostWithSpacesIsRefused() {
        XCTAssertTrue(problems(["RESTIC_PASSWORD": "pw", "RESTIC_HOST": "my vm"])[0].hasPrefix("RESTIC_HOST=my vm"))
    }
}
