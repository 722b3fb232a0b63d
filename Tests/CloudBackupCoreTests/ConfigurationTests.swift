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
        let both = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "s3remote:bucket/path", "AAI_USER": "alice", "BACKUP_BUCKET": "b",
                             "RCLONE_CONFIG_S3REMOTE_TYPE": "s3"])
        XCTAssertEqual(both.destination, .rcloneRemote("s3remote:bucket/path"))
        XCTAssertEqual(both.destination.directResticRepository, "rclone:s3remote:bucket/path")
        let infn = try load(["RESTIC_PASSWORD": "pw", "AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "agent-pw"])
        XCTAssertEqual(infn.destination, .infnCloud(user: "alice", bucket: "vm1"))
        XCTAssertEqual(infn.destination.rclonePath, "infncloud:/alice/vm1")
        let local = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "/srv/backups/"])
        XCTAssertEqual(local.destination, .localDirectory("/srv/backups", isDefault: false))
        XCTAssertEqual(local.destination.directResticRepository, "/srv/backups")
        let onTheFly = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": ":s3,provider=Ceph:bucket"])
        XCTAssertEqual(onTheFly.destination, .onTheFlyRemote(OnTheFlyRemote(backend: "s3", parameters: [.init(key: "provider", value: "Ceph")], path: "bucket")))
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

    /// rclone 1.60 fails every S3 call when AWS_CA_BUNDLE is set: never passed on, but no longer
    /// dropped silently either (CertificateAuthorityTests).
    func testChildEnvironmentDropsAWSCABundle() throws {
        let configuration = try load(["RESTIC_PASSWORD": "pw", "AWS_CA_BUNDLE": "/etc/ssl/x.pem"],
                                     files: ["/etc/ssl/x.pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"])
        XCTAssertNil(configuration.childEnvironment["AWS_CA_BUNDLE"])
        XCTAssertEqual(configuration.childEnvironment["PATH"], "/usr/bin:/bin")
        XCTAssertEqual(configuration.certificateAuthorityFile, "/etc/ssl/x.pem")
        XCTAssertEqual(configuration.notes.count, 1)
    }

    func testHostWithSpacesIsRefused() {
        XCTAssertTrue(problems(["RESTIC_PASSWORD": "pw", "RESTIC_HOST": "my vm"])[0].hasPrefix("RESTIC_HOST=my vm"))
    }

    // MARK: Caught before anything runs

    func testARemoteThatIsAURLIsRefusedWithoutShowingItsPassword() {
        let found = problems(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "https://backup:url-secret-91@dav.example.org/repo"])
        XCTAssertEqual(found.count, 1, "\(found)")
        XCTAssertTrue((found.first ?? "").hasPrefix("BACKUP_REMOTE=https://backup:***@dav.example.org/repo: a URL is not an rclone path"), "\(found)")
        XCTAssertTrue((problems(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "s3://bucket/path"]).first ?? "").contains("a URL is not an rclone path"))
    }

    func testWhitespaceAroundTheRemoteIsRefused() {
        for remote in [" r:b", "r:b ", "/srv/backups\t", " :s3,secret_access_key=ws-secret-77:bucket"] {
            let found = problems(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": remote, "RCLONE_CONFIG_R_TYPE": "local"])
            XCTAssertEqual(found.count, 1, "\(remote): \(found)")
            XCTAssertTrue((found.first ?? "").contains("has leading or trailing whitespace"), "\(found)")
            XCTAssertFalse((found.first ?? "").contains("ws-secret-77"), "\(found)")
        }
    }

    func testANamedRemoteMustBeDefinedAndTheDefinedOnesAreListed() throws {
        let config = "# made by rclone config\n[alpha]\ntype = local\n\n [beta] \ntype = s3\n"
        let files = ["/home/user/.config/rclone/rclone.conf": config]
        let found = problems(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "delta:bucket", "RCLONE_CONFIG_GAMMA_TYPE": "sftp"], files: files)
        XCTAssertEqual(found, ["BACKUP_REMOTE=delta:bucket: no rclone remote named delta is defined (rclone would fail with \"didn't find section in config file\"): "
                               + "the rclone configuration file /home/user/.config/rclone/rclone.conf defines alpha, beta; the environment defines gamma (RCLONE_CONFIG_<NAME>_TYPE). "
                               + "Define it (`rclone config`, or RCLONE_CONFIG_DELTA_TYPE and its options in the environment) or correct the name."])
        // Defined in the file (names are case-sensitive there), in the environment (any case), or needing no definition.
        XCTAssertEqual(try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "beta:bucket"], files: files).destination, .rcloneRemote("beta:bucket"))
        XCTAssertNoThrow(try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "Gamma:x", "RCLONE_CONFIG_GAMMA_TYPE": "sftp"]))
        XCTAssertNoThrow(try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": ":local:/srv/x"]))
        XCTAssertNoThrow(try load(["RESTIC_PASSWORD": "pw", "AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "agent-pw"]))
        XCTAssertTrue((problems(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "Alpha:x"], files: files).first ?? "").contains("no rclone remote named Alpha"))
        // XDG_CONFIG_HOME moves the file; no file at all is said as such.
        XCTAssertNoThrow(try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "alpha:x", "XDG_CONFIG_HOME": "/xdg"], files: ["/xdg/rclone/rclone.conf": config]))
        let none = problems(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "alpha:x"])
        XCTAssertEqual(none, ["BACKUP_REMOTE=alpha:x: no rclone remote named alpha is defined (rclone would fail with \"didn't find section in config file\"): "
                              + "there is no rclone configuration file (/home/user/.config/rclone/rclone.conf). "
                              + "Define it (`rclone config`, or RCLONE_CONFIG_ALPHA_TYPE and its options in the environment) or correct the name."])
        // An encrypted configuration cannot be read: rclone will say.
        XCTAssertNoThrow(try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "secret:x"],
                                  files: ["/home/user/.config/rclone/rclone.conf": "# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabc\n"]))
    }

    func testRcloneConfigThatIsADirectoryIsSaidSo() throws {
        let directory = NSTemporaryDirectory() + "rclone-config-dir-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let found = problems(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": "r:b", "RCLONE_CONFIG": directory])
        XCTAssertEqual(found, ["RCLONE_CONFIG is set to a directory (\(directory)): point it to the rclone.conf that defines the remote r."])
    }

    func testIntegersArePlainDigits() throws {
        for text in ["+39555", " 8080", "8080 ", "80 80", "1e3", "0x50", "-1", "８０８０"] {
            let found = problems(["RESTIC_PASSWORD": "pw", "RESTIC_REST_PORT": text])
            XCTAssertEqual(found, ["RESTIC_REST_PORT=\(text): expected a TCP port number from 1 to 65535 (default 8080). Write the number in plain digits: no sign, spaces or other characters."])
        }
        XCTAssertEqual(problems(["RESTIC_PASSWORD": "pw", "RESTIC_REST_PORT": "99999"]), ["RESTIC_REST_PORT=99999: expected a TCP port number from 1 to 65535 (default 8080)."])
        XCTAssertEqual(try load(["RESTIC_PASSWORD": "pw", "RESTIC_REST_PORT": "08080"]).restPort, 8080)
        XCTAssertTrue((problems(["RESTIC_PASSWORD": "pw", "AAI_USER": "a", "BACKUP_BUCKET": "b", "OIDC_PASSWORD": "x", "STS_DURATION_SECONDS": "+900"]).first ?? "")
            .hasPrefix("STS_DURATION_SECONDS=+900: expected"))
    }

    func testSecretFilesMustBeRegularFilesAndPasswordsNotBlank() throws {
        let directory = NSTemporaryDirectory() + "secret-dir-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let blank = "\(directory)/blank"
        try " \t \n".write(toFile: blank, atomically: true, encoding: .utf8)
        let found = try problemsFromDisk([
            "RESTIC_PASSWORD_FILE": directory,
            "RESTIC_REST_USERNAME": "u",
            "RESTIC_REST_PASSWORD_FILE": "/dev/null",
        ])
        XCTAssertEqual(found, ["RESTIC_PASSWORD_FILE is set to a directory (\(directory)): point it to the file that holds the repository password.",
                               "RESTIC_REST_PASSWORD_FILE is set to a device (/dev/null): point it to the file that holds the value of RESTIC_REST_PASSWORD."])
        XCTAssertEqual(try problemsFromDisk(["RESTIC_PASSWORD_FILE": blank]),
                       ["RESTIC_PASSWORD_FILE=\(blank): the file holds only whitespace; it should hold the repository password."])
    }

    func problemsFromDisk(_ extra: [String: String]) throws -> [String] {
        do {
            _ = try ConfigurationLoader.load(environment: base.merging(extra) { $1 }, needs: [.repositoryPassword])
            XCTFail("expected a configuration error")
        } catch CloudBackupError.configuration(let problems) {
            return problems
        }
        return []
    }

    func testNewProblemsAreReportedWithTheOthers() {
        let found = problems(["BACKUP_REMOTE": "https://example.org/x", "RESTIC_REST_PORT": "+1", "LOCK_WAIT_SECONDS": "soon"])
        XCTAssertEqual(found.count, 4, "\(found)")
    }
}
