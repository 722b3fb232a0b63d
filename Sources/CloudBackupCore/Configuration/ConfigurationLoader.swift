import Foundation

/// Reads the environment into a `Configuration`, checking everything before anything runs: every
/// problem is collected and reported at once (exit 78), each naming its variable and what to do.
public enum ConfigurationLoader {
    /// Variables that may be given as NAME_FILE (Docker secrets). RESTIC_PASSWORD_FILE is restic's own.
    static let fileBackedSecrets = ["RESTIC_REST_USERNAME", "RESTIC_REST_PASSWORD", "BACKUP_CHECK_URL", "FORGET_CHECK_URL", "CHECK_CHECK_URL",
                                    "DRILL_CHECK_URL", "OIDC_PASSWORD", "OIDC_TOKEN_CHECK_URL"]

    /// Parses and validates everything, reporting every problem at once.
    public static func load(
        environment rawEnvironment: [String: String],
        needs: ConfigurationNeeds,
        readFile: FileReader = readFileFromDisk
    ) throws -> Configuration {
        var problems: [String] = []
        // Docker's env_file turns `NAME=` into an empty value: treat empty as unset, as a template intends.
        let environment = rawEnvironment.filter { !$0.value.isEmpty }
        var secrets: [String] = []

        func secret(_ name: String) -> String? {
            let fileName = "\(name)_FILE"
            switch (environment[name], environment[fileName]) {
            case (.some, .some):
                problems.append("\(name) and \(fileName) are both set: set only one of them.")
                return nil
            case (.some(let value), nil):
                return value
            case (nil, .some(let path)):
                switch secretFromFile(variable: fileName, path: path, holds: "the value of \(name)", readFile: readFile) {
                case .success(let value): return value
                case .failure(let error): problems += error.problems
                }
                return nil
            case (nil, nil):
                return nil
            }
        }

        // Repository password: restic's three ways, exactly one.
        var password: ResticPasswordSource?
        let passwordWays = repositoryPasswordVariables.filter { environment[$0] != nil }
        if passwordWays.count > 1 {
            problems.append("\(passwordWays.joined(separator: " and ")) are all set: set only one way to give the repository password.")
        } else if let value = environment["RESTIC_PASSWORD"] {
            password = .value(value)
            secrets.append(value)
        } else if let path = environment["RESTIC_PASSWORD_FILE"] {
            // restic strips surrounding whitespace from the file: a file of spaces is an empty password.
            switch secretFromFile(variable: "RESTIC_PASSWORD_FILE", path: path, holds: "the repository password", readFile: readFile) {
            case .success(let value):
                password = .file(path)
                secrets += [value, value.trimmingCharacters(in: .whitespaces)]
            case .failure(let error):
                problems += error.problems
            }
        } else if let command = environment["RESTIC_PASSWORD_COMMAND"] {
            password = .command(command)
        } else if needs.contains(.repositoryPassword) {
            problems.append("RESTIC_PASSWORD is not set: set it (or RESTIC_PASSWORD_FILE) to the password that encrypts the repository, and keep a copy somewhere safe: without it the backups cannot be restored.")
        }

        // REST server credentials: both or neither.
        var credentials: RestCredentials?
        let username = secret("RESTIC_REST_USERNAME")
        let restPassword = secret("RESTIC_REST_PASSWORD")
        switch (username, restPassword) {
        case (.some(let user), .some(let pass)):
            if user.contains(":") {
                problems.append("RESTIC_REST_USERNAME must not contain ':' (it separates user and password in HTTP basic authentication).")
            } else {
                credentials = RestCredentials(username: user, password: pass)
                secrets += [user, pass]
            }
        case (.some, nil):
            if environment["RESTIC_REST_PASSWORD_FILE"] == nil {
                problems.append("RESTIC_REST_USERNAME is set but RESTIC_REST_PASSWORD is not: set both to require authentication, or neither to serve on loopback only.")
            }
        case (nil, .some):
            if environment["RESTIC_REST_USERNAME_FILE"] == nil {
                problems.append("RESTIC_REST_PASSWORD is set but RESTIC_REST_USERNAME is not: set both to require authentication, or neither to serve on loopback only.")
            }
        case (nil, nil):
            break
        }

        let port = integer("RESTIC_REST_PORT", in: environment, default: 8080, range: 1...65535,
                           meaning: "a TCP port number from 1 to 65535", problems: &problems)
        let appendOnly = boolean("RESTIC_REST_APPEND_ONLY", in: environment, default: false, problems: &problems)
        let lockWait = integer("LOCK_WAIT_SECONDS", in: environment, default: 900, range: 0...86_400,
                               meaning: "a number of seconds from 0 to 86400", problems: &problems)
        let grace = integer("STOP_GRACE_SECONDS", in: environment, default: 8, range: 1...300,
                            meaning: "a number of seconds from 1 to 300", problems: &problems)

        let serverStart = integer("SERVER_START_TIMEOUT_SECONDS", in: environment, default: 60, range: 5...3600,
                                  meaning: "a number of seconds from 5 to 3600", problems: &problems)
        let pingTimeout = integer("PING_TIMEOUT_SECONDS", in: environment, default: 10, range: 1...60,
                                  meaning: "a number of seconds from 1 to 60", problems: &problems)

        let backupURL = pingURL("BACKUP_CHECK_URL", secret("BACKUP_CHECK_URL"), problems: &problems)
        let forgetURL = pingURL("FORGET_CHECK_URL", secret("FORGET_CHECK_URL"), problems: &problems)
        let checkURL = pingURL("CHECK_CHECK_URL", secret("CHECK_CHECK_URL"), problems: &problems)
        let drillURL = pingURL("DRILL_CHECK_URL", secret("DRILL_CHECK_URL"), problems: &problems)
        secrets += [backupURL, forgetURL, checkURL, drillURL].compactMap { $0?.absoluteString }
        let progressInterval = integer("PROGRESS_INTERVAL_SECONDS", in: environment, default: 60, range: 1...86_400,
                                       meaning: "a number of seconds from 1 to 86400", problems: &problems)
        let maximumAge = integer("SNAPSHOT_MAX_AGE_HOURS", in: environment, default: 48, range: 1...8760,
                                 meaning: "a number of hours from 1 to 8760", problems: &problems)
        let drillFiles = integer("DRILL_FILES", in: environment, default: 20, range: 1...1000,
                                 meaning: "a number of files from 1 to 1000", problems: &problems)
        let drillPaths = PathCoverage.parse(environment["DRILL_PATHS"] ?? "")
        if !drillPaths.relative.isEmpty {
            problems.append("DRILL_PATHS: \(drillPaths.relative.joined(separator: ", ")) \(drillPaths.relative.count == 1 ? "is not an absolute path" : "are not absolute paths"): list the absolute paths the backup saves (as restic records them), separated by ':' or spaces, e.g. /backup/dir1:/backup/dir2.")
        }
        let metricsDirectory = environment["METRICS_DIR"]
        if let metricsDirectory, !metricsDirectory.hasPrefix("/") {
            problems.append("METRICS_DIR=\(metricsDirectory): must be an absolute path (node_exporter's --collector.textfile.directory).")
        }

        if let host = environment["RESTIC_HOST"], host.contains(where: { $0.isWhitespace }) {
            problems.append("RESTIC_HOST=\(host): must not contain spaces (it names this machine in every snapshot).")
        }

        let stateDirectory = environment["CLOUD_BACKUP_STATE_DIR"]
            ?? environment["XDG_STATE_HOME"].map { "\($0)/cloud-backup" }
            ?? "\(environment["HOME"] ?? "/root")/.local/state/cloud-backup"
        if !stateDirectory.hasPrefix("/") {
            problems.append("CLOUD_BACKUP_STATE_DIR=\(stateDirectory): must be an absolute path.")
        }

        let destination = parseDestination(environment, stateDirectory: stateDirectory, problems: &problems)
        if case .rcloneRemote(let path)? = destination {
            problems += remoteDefinitionProblems(path, environment: environment, readFile: readFile)
        }
        var onTheFly: OnTheFlyRemote?
        if case .onTheFlyRemote(let remote)? = destination { onTheFly = remote }
        let oidcPassword = secret("OIDC_PASSWORD")
        var infn: InfnSettings?
        var infnEnvironment = environment
        if let tokenURL = secret("OIDC_TOKEN_CHECK_URL") { infnEnvironment["OIDC_TOKEN_CHECK_URL"] = tokenURL }
        if case .infnCloud(let user, let bucket)? = destination {
            infn = infnSettings(user: user, bucket: bucket, environment: infnEnvironment, password: oidcPassword, problems: &problems)
            secrets += [oidcPassword, infn?.tokenCheckURL?.absoluteString, infn?.clientSecret].compactMap { $0 }
        }
        let infnPaths = InfnSettings.paths(stateDirectory: stateDirectory, environment: environment)
        let certificateAuthority = CertificateAuthority.choose(in: environment, readFile: readFile, problems: &problems)
        infn?.certificateAuthorityFile = certificateAuthority?.path

        if !problems.isEmpty {
            throw CloudBackupError.configuration(problems)
        }

        secrets += secretValues(in: environment, readFile: readFile)
        let base = childEnvironment(from: rawEnvironment, remote: onTheFly, certificateAuthority: certificateAuthority?.path)
        var seen = Set<String>()
        return Configuration(
            destination: destination!,
            stateDirectory: stateDirectory,
            resticPassword: password,
            restCredentials: credentials,
            restPort: port,
            appendOnly: appendOnly,
            resticHost: environment["RESTIC_HOST"],
            backupCheckURL: backupURL,
            forgetCheckURL: forgetURL,
            checkCheckURL: checkURL,
            drillCheckURL: drillURL,
            metricsDirectory: metricsDirectory,
            progressIntervalSeconds: progressInterval,
            snapshotMaximumAgeHours: maximumAge,
            drillFiles: drillFiles,
            drillPaths: drillPaths.paths,
            lockWaitSeconds: lockWait,
            stopGraceSeconds: grace,
            serverStartTimeoutSeconds: serverStart,
            pingTimeoutSeconds: pingTimeout,
            certificateAuthorityFile: certificateAuthority?.path,
            infn: infn,
            infnPaths: infnPaths,
            secrets: secrets.filter { $0.count >= 4 && seen.insert($0).inserted },
            notes: CertificateAuthority.notes(for: certificateAuthority, environment: environment),
            childEnvironment: infn.map { infnChildEnvironment(base, settings: $0, paths: infnPaths) } ?? base)
    }

    static func parseDestination(_ environment: [String: String], stateDirectory: String, problems: inout [String]) -> Destination? {
        if let remote = environment["BACKUP_REMOTE"] {
            let trimmed = remote.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed != remote {
                let leading = remote.prefix { $0.isWhitespace }
                let trailing = String(remote.reversed().prefix { $0.isWhitespace }.reversed())
                problems.append("BACKUP_REMOTE=\"\(leading)\(RcloneNames.displayed(trimmed))\(trailing)\" has leading or trailing whitespace: remove it (rclone would take it for part of the remote's name or path).")
                return nil
            }
            if RcloneNames.looksLikeURL(remote) {
                problems.append("BACKUP_REMOTE=\(RcloneNames.displayed(remote)): a URL is not an rclone path. Define an rclone remote for that storage (`rclone config`: s3, webdav, sftp, …) and set BACKUP_REMOTE=remote:bucket/path, or give an absolute local directory.")
                return nil
            }
            if remote.hasPrefix("/") {
                return .localDirectory(normalizedDirectory(remote), isDefault: false)
            }
            if remote.hasPrefix(":") {
                do {
                    return .onTheFlyRemote(try OnTheFlyRemote.parse(remote))
                } catch let error as CloudBackupError {
                    problems += error.problems
                    return nil
                } catch {
                    problems.append("BACKUP_REMOTE: \(error)")
                    return nil
                }
            }
            if let colon = remote.firstIndex(of: ":") {
                let name = remote[..<colon]
                if !name.isEmpty && name.allSatisfy({ $0.isLetter || $0.isNumber || "_-. ".contains($0) }) {
                    return .rcloneRemote(remote)
                }
            }
            problems.append("BACKUP_REMOTE=\(remote): expected an rclone path like `myremote:bucket/path` (a remote defined in rclone.conf) or an absolute local directory like `/srv/backups`.")
            return nil
        }
        let user = environment["AAI_USER"]
        let bucket = environment["BACKUP_BUCKET"]
        switch (user, bucket) {
        case (.some(let user), .some(let bucket)):
            var valid = true
            if user.contains("/") || user.contains(":") {
                problems.append("AAI_USER=\(user): must be your INFN AAI username (no '/' or ':').")
                valid = false
            }
            if bucket.contains(":") || bucket.hasPrefix("/") {
                problems.append("BACKUP_BUCKET=\(bucket): must be a path inside your INFN Cloud bucket, like `backups` (no ':' and no leading '/').")
                valid = false
            }
            return valid ? .infnCloud(user: user, bucket: bucket) : nil
        case (.some, nil):
            problems.append("AAI_USER is set but BACKUP_BUCKET is not: set both for INFN Cloud storage (or BACKUP_REMOTE for any other destination).")
            return nil
        case (nil, .some):
            problems.append("BACKUP_BUCKET is set but AAI_USER is not: set both for INFN Cloud storage (or BACKUP_REMOTE for any other destination).")
            return nil
        case (nil, nil):
            return .localDirectory("\(stateDirectory)/repository", isDefault: true)
        }
    }

    /// A named remote must be defined where rclone will look, or every job fails later with rclone's
    /// "didn't find section in config file". Read from the file and the environment, not by running
    /// rclone: instant, and no process before the configuration is known to be valid.
    static func remoteDefinitionProblems(_ path: String, environment: [String: String], readFile: FileReader) -> [String] {
        let name = String(path.prefix { $0 != ":" })
        if RcloneNames.isDefinedInEnvironment(name, environment) { return [] }
        let file = RcloneNames.configFile(environment: environment)
        let explicit = environment["RCLONE_CONFIG"] != nil
        let fileName = explicit ? "RCLONE_CONFIG=\(file)" : "the rclone configuration file \(file)"
        let fromEnvironment = RcloneNames.environmentRemotes(environment)
        let environmentPart = fromEnvironment.isEmpty ? "" : "; the environment defines \(fromEnvironment.joined(separator: ", ")) (RCLONE_CONFIG_<NAME>_TYPE)"
        let fix = "Define it (`rclone config`, or RCLONE_CONFIG_\(name.uppercased())_TYPE and its options in the environment) or correct the name."
        switch ConfiguredFile.read(file, readFile: readFile) {
        case .notAFile(let kind):
            return explicit ? ["RCLONE_CONFIG is set to \(kind) (\(file)): point it to the rclone.conf that defines the remote \(name)."]
                : ["\(fileName) is \(kind), not rclone's configuration: BACKUP_REMOTE names the remote \(name), which rclone cannot find. \(fix)"]
        case .missing:
            if explicit {
                return ["RCLONE_CONFIG=\(file): the file does not exist; point it to the rclone.conf that defines the remote (create one with `rclone config`)\(environmentPart)."]
            }
            return ["BACKUP_REMOTE=\(path): no rclone remote named \(name) is defined (rclone would fail with \"didn't find section in config file\"): there is no rclone configuration file (\(file))\(environmentPart). \(fix)"]
        case .unreadable(let reason):
            return ["\(fileName): cannot read the file (\(reason)), so rclone cannot find the remote \(name) that BACKUP_REMOTE names."]
        case .content(let text):
            // An encrypted configuration cannot be read without its password; rclone will tell.
            guard let sections = RcloneNames.sections(in: text), !sections.contains(name) else { return [] }
            let defined = sections.isEmpty ? "defines no remote" : "defines \(sections.joined(separator: ", "))"
            return ["BACKUP_REMOTE=\(path): no rclone remote named \(name) is defined (rclone would fail with \"didn't find section in config file\"): \(fileName) \(defined)\(environmentPart). \(fix)"]
        }
    }

    static func normalizedDirectory(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }

    /// Plain decimal digits only: `+39555`, `8080 ` or `1e3` are refused rather than read as something
    /// the user may not have meant.
    static func integer(_ name: String, in environment: [String: String], default fallback: Int, range: ClosedRange<Int>,
                        meaning: String, problems: inout [String]) -> Int {
        guard let text = environment[name] else { return fallback }
        let digitsOnly = text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        guard digitsOnly, let value = Int(text), range.contains(value) else {
            let hint = digitsOnly ? "" : " Write the number in plain digits: no sign, spaces or other characters."
            problems.append("\(name)=\(text): expected \(meaning) (default \(fallback)).\(hint)")
            return fallback
        }
        return value
    }

    static func boolean(_ name: String, in environment: [String: String], default fallback: Bool, problems: inout [String]) -> Bool {
        guard let text = environment[name] else { return fallback }
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default:
            problems.append("\(name)=\(text): expected true or false (default \(fallback)).")
            return fallback
        }
    }

    static func pingURL(_ name: String, _ text: String?, problems: inout [String]) -> URL? {
        guard let text else { return nil }
        guard let url = URL(string: text.trimmingCharacters(in: .whitespaces)),
              let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty
        else {
            // The URL itself is a secret of sorts (anyone holding it can ping): show only its shape.
            problems.append("\(name): expected an http(s) Healthchecks ping URL like https://hc-ping.com/<uuid> (got a value of \(text.count) characters that is not one).")
            return nil
        }
        return url
    }
}

extension CloudBackupError {
    /// The sentences of a configuration error (any other error as one sentence).
    var problems: [String] {
        if case .configuration(let list) = self { return list }
        return [description]
    }
}
