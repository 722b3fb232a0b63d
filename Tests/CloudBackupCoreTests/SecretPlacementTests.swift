import XCTest
@testable import CloudBackupCore

/// Which child gets which secret, on-the-fly remotes defined through the environment, and redaction
/// that matches what the tool itself writes.
final class SecretPlacementTests: XCTestCase {
    let base = ["HOME": "/home/user", "PATH": "/usr/bin:/bin"]

    func load(_ extra: [String: String], files: [String: String] = [:]) throws -> Configuration {
        try ConfigurationLoader.load(environment: base.merging(extra) { $1 }, needs: [.repositoryPassword]) { path in
            guard let content = files[path] else { throw CocoaError(.fileReadNoSuchFile) }
            return content
        }
    }

    // MARK: The repository password reaches restic only

    func testTheChildrensBaseHoldsNoRepositoryPasswordAndResticGetsExactlyTheConfiguredOne() throws {
        let sources: [([String: String], ResticPasswordSource, String)] = [
            (["RESTIC_PASSWORD": "repo-pw-1"], .value("repo-pw-1"), "RESTIC_PASSWORD"),
            (["RESTIC_PASSWORD_FILE": "/run/secrets/pw"], .file("/run/secrets/pw"), "RESTIC_PASSWORD_FILE"),
            (["RESTIC_PASSWORD_COMMAND": "pass show backup"], .command("pass show backup"), "RESTIC_PASSWORD_COMMAND"),
        ]
        for (variables, source, variable) in sources {
            let configuration = try load(variables.merging(["RESTIC_REST_USERNAME": "rest-user", "RESTIC_REST_PASSWORD": "rest-pw-2",
                                                            "BACKUP_CHECK_URL": "https://hc-ping.com/4e7c1d2a"]) { $1 },
                                         files: ["/run/secrets/pw": "repo-pw-3\n"])
            XCTAssertEqual(configuration.resticPassword, source)
            let child = configuration.childEnvironment
            for name in ["RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_REST_USERNAME", "RESTIC_REST_PASSWORD", "BACKUP_CHECK_URL"] {
                XCTAssertNil(child[name], "\(name) must not reach every child")
            }
            let route = RepositoryRoute.direct(configuration.destination)
            let restic = ResticCommand.environment(base: child, route: route, password: configuration.resticPassword)
            XCTAssertEqual(restic.keys.filter { $0.hasPrefix("RESTIC_PASSWORD") }, [variable])
            XCTAssertEqual(restic["PATH"], "/usr/bin:/bin")
            // rclone serve gets its own credentials, never the repository's.
            let rclone = RcloneCommand.serveEnvironment(base: restic, credentials: configuration.restCredentials)
            XCTAssertTrue(rclone.keys.filter { $0.hasPrefix("RESTIC_PASSWORD") }.isEmpty, "\(rclone.keys)")
            XCTAssertEqual(rclone["RCLONE_USER"], "rest-user")
        }
    }

    func testAStrayPasswordVariableInTheBaseIsReplacedByTheConfiguredSource() {
        let environment = ResticCommand.environment(base: ["RESTIC_PASSWORD": "stray", "RESTIC_PASSWORD_COMMAND": "echo stray"],
                                                    route: .direct(.localDirectory("/r", isDefault: false)), password: .file("/pw"))
        XCTAssertEqual(environment.filter { $0.key.hasPrefix("RESTIC_PASSWORD") }, ["RESTIC_PASSWORD_FILE": "/pw"])
    }

    func testInfnChildrenGetNoRepositoryPasswordEither() throws {
        let configuration = try load(["RESTIC_PASSWORD": "repo-pw-1", "AAI_USER": "alice", "BACKUP_BUCKET": "vm1", "OIDC_PASSWORD": "agent-pw"])
        XCTAssertNil(configuration.childEnvironment["RESTIC_PASSWORD"])
        XCTAssertNil(configuration.childEnvironment["OIDC_PASSWORD"])
        XCTAssertEqual(configuration.childEnvironment["AWS_PROFILE"], "cloud-backup")
    }

    // MARK: On-the-fly remotes

    static let s3Remote = #":s3,provider=Ceph,env_auth,endpoint="https://rgw.example.org:8443",access_key_id=AKIA0123,secret_access_key="sk/with,comma:and""quote",session_token=tok-9f8e:bucket/host-1"#

    func testTheConnectionStringIsParsedAsRcloneDoes() throws {
        let remote = try OnTheFlyRemote.parse(Self.s3Remote)
        XCTAssertEqual(remote.backend, "s3")
        XCTAssertEqual(remote.parameters, [
            .init(key: "provider", value: "Ceph"),
            .init(key: "env_auth", value: "true"),
            .init(key: "endpoint", value: "https://rgw.example.org:8443"),
            .init(key: "access_key_id", value: "AKIA0123"),
            .init(key: "secret_access_key", value: "sk/with,comma:and\"quote"),
            .init(key: "session_token", value: "tok-9f8e"),
        ])
        XCTAssertEqual(remote.path, "bucket/host-1")
        XCTAssertEqual(try OnTheFlyRemote.parse(":local:/srv/x"), OnTheFlyRemote(backend: "local", parameters: [], path: "/srv/x"))
        XCTAssertEqual(try OnTheFlyRemote.parse(":sftp,host=h,pass='it''s':"), OnTheFlyRemote(backend: "sftp", parameters: [.init(key: "host", value: "h"), .init(key: "pass", value: "it's")], path: ""))
    }

    func testTheRemoteIsDefinedThroughTheEnvironmentAndItsPathHoldsNoSecret() throws {
        let configuration = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": Self.s3Remote])
        guard case .onTheFlyRemote(let remote) = configuration.destination else { return XCTFail("\(configuration.destination)") }
        let name = remote.remoteName
        XCTAssertTrue(name.hasPrefix("cloudbackup_") && name.count == "cloudbackup_".count + 8, name)
        XCTAssertEqual(configuration.destination.rclonePath, "\(name):bucket/host-1")
        XCTAssertEqual(configuration.destination.directResticRepository, "rclone:\(name):bucket/host-1")
        let prefix = "RCLONE_CONFIG_\(name.uppercased())_"
        let child = configuration.childEnvironment
        XCTAssertEqual(child["\(prefix)TYPE"], "s3")
        XCTAssertEqual(child["\(prefix)PROVIDER"], "Ceph")
        XCTAssertEqual(child["\(prefix)ENV_AUTH"], "true")
        XCTAssertEqual(child["\(prefix)ENDPOINT"], "https://rgw.example.org:8443")
        XCTAssertEqual(child["\(prefix)SECRET_ACCESS_KEY"], "sk/with,comma:and\"quote")
        XCTAssertNil(child["BACKUP_REMOTE"], "the connection string with its keys does not reach the children")
        XCTAssertEqual("\(configuration.destination)",
                       #":s3,provider=Ceph,env_auth=true,endpoint="https://rgw.example.org:8443",access_key_id=***,secret_access_key=***,session_token=***:bucket/host-1 (rclone on-the-fly remote)"#)
        // The credentials are secrets for redaction; the provider and the endpoint stay readable in messages.
        for value in ["AKIA0123", "sk/with,comma:and\"quote", "tok-9f8e"] {
            XCTAssertTrue(configuration.secrets.contains(value), value)
        }
        for value in ["Ceph", "https://rgw.example.org:8443", "true"] {
            XCTAssertFalse(configuration.secrets.contains(value), value)
        }
        for argument in RcloneCommand.serveRestic(path: configuration.destination.rclonePath, listenAddress: "127.0.0.1:1", appendOnly: false) {
            XCTAssertFalse(argument.contains("sk/with") || argument.contains("AKIA") || argument.contains("tok-9f8e"), argument)
        }
    }

    func testTheNameIsStableAndTellsApartRemotesThatDifferInMoreThanSecrets() throws {
        let a = try OnTheFlyRemote.parse(":s3,endpoint='https://a.example',secret_access_key=one:b")
        XCTAssertEqual(a.remoteName, try OnTheFlyRemote.parse(":s3,endpoint='https://a.example',secret_access_key=one:b").remoteName)
        XCTAssertEqual(a.remoteName, try OnTheFlyRemote.parse(":s3,endpoint='https://a.example',secret_access_key=two:b").remoteName)
        XCTAssertNotEqual(a.remoteName, try OnTheFlyRemote.parse(":s3,endpoint='https://b.example',secret_access_key=one:b").remoteName)
    }

    func testABadConnectionStringIsReportedWithoutItsValues() {
        for text in [":s3,secret_access_key=\"unterminated-secret-55:b", ":s3,secret_access_key=unended-secret-55", ":s3,sec-ret=x:b", ":,a=b:c", ":s3,secret_access_key=\"q\"x:b",
                     ":s3,endpoint=https://rgw.example.org,secret_access_key=unquoted-secret-55:b"] {
            do {
                _ = try load(["RESTIC_PASSWORD": "pw", "BACKUP_REMOTE": text])
                XCTFail("\(text) should be refused")
            } catch CloudBackupError.configuration(let problems) {
                XCTAssertEqual(problems.count, 1, "\(problems)")
                XCTAssertTrue((problems.first ?? "").hasPrefix("BACKUP_REMOTE: not a valid rclone on-the-fly remote ("), (problems.first ?? ""))
                XCTAssertFalse((problems.first ?? "").contains("secret-55"), (problems.first ?? ""))
            } catch {
                XCTFail("\(error)")
            }
        }
    }

    // MARK: Redaction

    func testTheRepositoryURLIsRedactedWithTheEncodingItWasWrittenWith() {
        let credentials = RestCredentials(username: "user-name.x", password: "my-secret/pw~ü")
        let url = RepositoryRoute.restServer(port: 8080, credentials: credentials).repositoryURL
        XCTAssertEqual(url, "rest:http://user-name.x:my-secret%2Fpw~%C3%BC@127.0.0.1:8080/")
        let line = "Fatal: unable to open config file at \(url): connection refused"
        XCTAssertEqual(Redactor.redact(line, secrets: ["my-secret/pw~ü", "user-name.x"]),
                       "Fatal: unable to open config file at rest:http://***:***@127.0.0.1:8080/: connection refused")
        XCTAssertEqual(Redactor.redact("raw my-secret/pw~ü", secrets: ["my-secret/pw~ü"]), "raw ***")
    }

    func testShortSecretsAreRedactedAsWordsOnlyLongOnesEverywhere() {
        XCTAssertEqual(Redactor.redact("cloud-backup: serving for backup (user backup)", secrets: ["backup"]),
                       "cloud-backup: serving for *** (user ***)")
        XCTAssertEqual(Redactor.redact("rest:http://backup:x@127.0.0.1/", secrets: ["backup"]), "rest:http://***:x@127.0.0.1/")
        XCTAssertEqual(Redactor.redact("key=AKIALONGSECRETVALUE1 andAKIALONGSECRETVALUE1glued", secrets: ["AKIALONGSECRETVALUE1"]),
                       "key=*** and***glued")
    }

    func testOnlyCredentialParametersOfAnOnTheFlyRemoteAreSecrets() throws {
        let remote = try OnTheFlyRemote.parse(":s3,provider=Ceph,region=eu,access_key_id=AKIA1234,secret_access_key=abcd1234efgh,sas_url=\"https://x?sig=zz\":bucket")
        XCTAssertEqual(Set(remote.secretValues), ["AKIA1234", "abcd1234efgh", "https://x?sig=zz"])
    }

    func testTheRestUsernameAndFileSecretsAreSecrets() throws {
        let configuration = try load(["RESTIC_PASSWORD": "pw", "RESTIC_REST_USERNAME_FILE": "/run/secrets/user", "RESTIC_REST_PASSWORD": "rest-pw-2"],
                                     files: ["/run/secrets/user": "backup-client\n"])
        XCTAssertTrue(configuration.secrets.contains("backup-client"))
        let raw = ConfigurationLoader.secretValues(in: ["RESTIC_REST_USERNAME": "rest-user", "BACKUP_REMOTE": ":sftp,host=h.example,pass=otf-pw-3:x",
                                                        "RCLONE_CONFIG_MYS3_SECRET_ACCESS_KEY": "env-remote-key", "RCLONE_CONFIG_MYS3_TYPE": "s3",
                                                        "FORGET_CHECK_URL_FILE": "/run/secrets/url"],
                                                  readFile: { path in path == "/run/secrets/url" ? "https://hc-ping.com/from-a-file\n" : "" })
        for value in ["rest-user", "otf-pw-3", "env-remote-key", "https://hc-ping.com/from-a-file"] {
            XCTAssertTrue(raw.contains(value), "\(value) missing from \(raw)")
        }
        XCTAssertFalse(raw.contains("s3"))
        XCTAssertFalse(raw.contains("h.example"), "a host name is not a credential")
        XCTAssertEqual(CommandLineInterface.secretValues(in: ["RESTIC_REST_USERNAME": "rest-user"]), ["rest-user"])
    }
}
