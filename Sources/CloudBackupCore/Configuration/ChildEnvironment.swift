import Foundation

/// Which of our variables reach the tools we start, and which values are secrets.
///
/// Every child starts from one base environment: ours, minus what belongs to one tool only. The
/// repository password goes to restic alone (`ResticCommand.environment` adds the configured source);
/// the REST credentials reach restic inside RESTIC_REPOSITORY and rclone as RCLONE_USER/RCLONE_PASS;
/// OIDC_PASSWORD reaches oidc-agent's commands only (`OidcAgent`); the check URLs are ours.
extension ConfigurationLoader {
    /// restic's three ways to get the repository password.
    public static let repositoryPasswordVariables = ["RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"]

    /// rclone 1.60 fails every S3 call when AWS_CA_BUNDLE is set (docs/design.md#infn-credential-chain):
    /// the CA file in use (`certificateAuthority`, which may come from it) reaches each tool its own way
    /// instead (`CertificateAuthority`); the secrets above stay with the one tool they are for;
    /// BACKUP_REMOTE may hold an on-the-fly remote's keys, which rclone gets as the remote's own
    /// variables (`remote.environment`) instead.
    static func childEnvironment(from environment: [String: String], remote: OnTheFlyRemote? = nil,
                                 certificateAuthority: String? = nil) -> [String: String] {
        var child = environment
        child.removeValue(forKey: CertificateAuthority.awsVariable)
        // Unset or empty (a set one would be `certificateAuthority`): children see it only when it is in use.
        child.removeValue(forKey: CertificateAuthority.variable)
        child.merge(CertificateAuthority.childVariables(certificateAuthority)) { $1 }
        child.removeValue(forKey: "BACKUP_REMOTE")
        for name in repositoryPasswordVariables { child.removeValue(forKey: name) }
        for name in fileBackedSecrets {
            child.removeValue(forKey: name)
            child.removeValue(forKey: "\(name)_FILE")
        }
        // No rclone.conf at all (the local default, an on-the-fly remote): an empty RCLONE_CONFIG makes
        // rclone use an in-memory configuration instead of logging "Config file … not found - using
        // defaults" at every start of every rclone.
        if (environment["RCLONE_CONFIG"] ?? "").isEmpty {
            let fallback = RcloneNames.configFile(environment: environment.filter { $0.key != "RCLONE_CONFIG" })
            if !FileManager.default.fileExists(atPath: fallback) { child["RCLONE_CONFIG"] = "" }
        }
        if let remote {
            // A variable of the user's for the same name would mix into the definition.
            let prefix = OnTheFlyRemote.environmentPrefix(remote.remoteName)
            for name in child.keys where name.hasPrefix(prefix) { child.removeValue(forKey: name) }
            child.merge(remote.environment) { $1 }
        }
        return child
    }

    /// The secrets of a raw environment, for output made before (or without) a valid configuration,
    /// and added to a valid one's: values, the contents of their `*_FILE`s (read only when they are
    /// regular files), an on-the-fly remote's parameter values, and the secret-looking values of remotes
    /// defined in the environment.
    public static func secretValues(in rawEnvironment: [String: String], readFile: FileReader = readFileFromDisk) -> [String] {
        let environment = rawEnvironment.filter { !$0.value.isEmpty }
        var secrets: [String] = []
        for name in repositoryPasswordVariables.prefix(1) + fileBackedSecrets + ["OIDC_CLIENT_SECRET", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            if let value = environment[name] { secrets.append(value) }
        }
        for name in ["RESTIC_PASSWORD_FILE"] + fileBackedSecrets.map({ "\($0)_FILE" }) {
            guard let path = environment[name] else { continue }
            if case .content(let text) = ConfiguredFile.read(path, readFile: readFile) {
                secrets += [text.trimmingCharacters(in: .newlines), text.trimmingCharacters(in: .whitespacesAndNewlines)]
            }
        }
        if let remote = environment["BACKUP_REMOTE"]?.trimmingCharacters(in: .whitespacesAndNewlines), remote.hasPrefix(":"),
           let parsed = try? OnTheFlyRemote.parse(remote) {
            secrets += parsed.secretValues
        }
        secrets += RcloneNames.environmentSecrets(environment)
        var seen = Set<String>()
        return secrets.filter { !$0.isEmpty && seen.insert($0).inserted }
    }
}
