import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// INFN Cloud login settings: oidc-agent holds the user's refresh token (device flow at INFN's IAM),
/// and short-lived S3 keys come from STS AssumeRoleWithWebIdentity on INFN's Ceph RGW
/// (docs/design.md#infn-credential-chain). Every endpoint can be overridden (tests point them at loopback).
public struct InfnSettings: Sendable, Equatable {
    public var user: String
    public var bucket: String
    /// Unlocks the oidc-agent account (its configuration is encrypted with it).
    public var accountPassword: String
    public var accountName: String
    public var issuer: URL
    public var s3Endpoint: URL
    public var roleName: String
    public var audience: String
    public var scopes: String
    public var clientID: String?
    public var clientSecret: String?
    public var stsDurationSeconds: Int
    /// The credential process reports keys as expiring this much earlier than they do, so rclone asks
    /// for new ones in time (rclone has no early window of its own).
    public var credentialMarginSeconds: Int
    public var tokenCheckURL: URL?
    public var refreshTokenMinimumDays: Int
    /// CLOUD_BACKUP_CA_FILE as the configuration chose it (nil: the system's store alone): oidc-agent's
    /// account verifies the identity provider with it (`OidcAgent.alignCertificatePath`).
    public var certificateAuthorityFile: String?

    public static let defaultIssuer = "https://iam.cloud.infn.it/"
    public static let defaultS3Endpoint = "https://rgw.cloud.infn.it/"


    /// Where the tool keeps INFN state, under the state directory (the persistent volume in the image).
    public struct Paths: Sendable, Equatable {
        public var agentSocket: String
        public var awsConfig: String
        public var rcloneConfig: String
    }

    public static func paths(stateDirectory: String, environment: [String: String]) -> Paths {
        Paths(agentSocket: agentSocket(stateDirectory: stateDirectory),
              awsConfig: "\(stateDirectory)/aws-config",
              rcloneConfig: environment["RCLONE_CONFIG"] ?? "\(environment["HOME"] ?? "/root")/.config/rclone/rclone.conf")
    }

    /// The agent's socket: in the state directory, unless that path is too long for a Unix socket
    /// (108 bytes; oidc-gen 4.2.6 corrupts its heap on a longer OIDC_SOCK). Then a path under /tmp that
    /// every command derives from the state directory alike.
    public static func agentSocket(stateDirectory: String) -> String {
        let preferred = "\(stateDirectory)/oidc-agent.sock"
        if preferred.utf8.count < 100 { return preferred }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for byte in stateDirectory.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return "\(sharedSocketDirectory)/oidc-agent-\(String(hash, radix: 16)).sock"
    }

    /// The directory of the short socket paths: one per user, in /tmp (which anyone may write), so it
    /// is checked before use (OidcAgent.prepareSocketDirectory).
    public static var sharedSocketDirectory: String { "/tmp/cloud-backup-\(getuid())" }

    /// The AWS profile whose credential_process rclone runs.
    public static let awsProfile = "cloud-backup"
}

extension ConfigurationLoader {
    /// Reads the INFN settings; problems are added to `problems`.
    static func infnSettings(user: String, bucket: String, environment: [String: String], password: String?,
                             problems: inout [String]) -> InfnSettings? {
        guard let password else {
            problems.append("OIDC_PASSWORD is not set: INFN Cloud storage (AAI_USER/BACKUP_BUCKET) needs it to unlock the oidc-agent account that holds your login (choose one now if you have never run `cloud-backup config`).")
            return nil
        }
        func url(_ name: String, _ fallback: String) -> URL {
            let text = environment[name] ?? fallback
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", url.host != nil else {
                problems.append("\(name)=\(text): expected an http(s) URL (default \(fallback)).")
                return URL(string: fallback)!
            }
            return url
        }
        let account = environment["OIDC_ACCOUNT"] ?? InfnDefaults.remoteName
        if account.isEmpty || !account.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) {
            problems.append("OIDC_ACCOUNT=\(account): an oidc-agent account short name uses letters, digits, '-', '_' and '.' only.")
        }
        let duration = integer("STS_DURATION_SECONDS", in: environment, default: 900, range: 900...43_200,
                               meaning: "a number of seconds from 900 to 43200", problems: &problems)
        let margin = integer("CREDENTIAL_MARGIN_SECONDS", in: environment, default: 300, range: 0...43_000,
                             meaning: "a number of seconds from 0 to 43000", problems: &problems)
        if margin >= duration {
            problems.append("CREDENTIAL_MARGIN_SECONDS=\(margin) must be smaller than STS_DURATION_SECONDS=\(duration).")
        }
        let minimumDays = integer("REFRESH_TOKEN_MIN_DAYS", in: environment, default: 7, range: 0...365,
                                  meaning: "a number of days from 0 to 365", problems: &problems)
        let checkURL = pingURL("OIDC_TOKEN_CHECK_URL", environment["OIDC_TOKEN_CHECK_URL"], problems: &problems)
        return InfnSettings(
            user: user, bucket: bucket, accountPassword: password, accountName: account,
            issuer: url("OIDC_ISSUER_URL", InfnSettings.defaultIssuer),
            s3Endpoint: url("S3_ENDPOINT_URL", InfnSettings.defaultS3Endpoint),
            roleName: environment["STS_ROLE_NAME"] ?? "IAMaccess",
            audience: environment["OIDC_AUDIENCE"] ?? "object",
            scopes: environment["OIDC_SCOPES"] ?? "openid profile offline_access email",
            clientID: environment["OIDC_CLIENT_ID"], clientSecret: environment["OIDC_CLIENT_SECRET"],
            stsDurationSeconds: duration, credentialMarginSeconds: margin,
            tokenCheckURL: checkURL, refreshTokenMinimumDays: minimumDays,
            // Checked by the configuration (which replaces this); the credential process reads the
            // variable the configuration gave rclone.
            certificateAuthorityFile: CertificateAuthority.named(in: environment)?.path)
    }

    /// What every child (rclone, restic, oidc-*) needs in INFN mode: the agent's socket, the AWS profile
    /// whose credential_process gives rclone its keys, and no stray AWS keys (they would win over the profile).
    static func infnChildEnvironment(_ base: [String: String], settings: InfnSettings, paths: InfnSettings.Paths) -> [String: String] {
        var environment = base
        environment["OIDC_SOCK"] = paths.agentSocket
        environment["AWS_CONFIG_FILE"] = paths.awsConfig
        environment["AWS_PROFILE"] = InfnSettings.awsProfile
        environment["AWS_SDK_LOAD_CONFIG"] = "1"
        environment["RCLONE_CONFIG"] = paths.rcloneConfig
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE"] {
            environment.removeValue(forKey: name)
        }
        // The credential process reads these (rclone runs it with its own environment).
        environment["OIDC_ACCOUNT"] = settings.accountName
        environment["S3_ENDPOINT_URL"] = settings.s3Endpoint.absoluteString
        environment["STS_ROLE_NAME"] = settings.roleName
        environment["OIDC_AUDIENCE"] = settings.audience
        environment["STS_DURATION_SECONDS"] = "\(settings.stsDurationSeconds)"
        environment["CREDENTIAL_MARGIN_SECONDS"] = "\(settings.credentialMarginSeconds)"
        return environment
    }
}
