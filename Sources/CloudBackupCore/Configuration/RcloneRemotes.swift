import Foundation

/// rclone's on-the-fly remote, `:backend,key=value,key2="quoted,value":path` (rclone's connection
/// string). On a command line its keys would show in `ps`, in "serving …" and "backup using …" lines,
/// in `status` and in ping bodies. So the tool turns it into a remote of its own name defined only
/// through rclone's environment (`RCLONE_CONFIG_<NAME>_TYPE`, `RCLONE_CONFIG_<NAME>_<KEY>`): rclone, and
/// restic's `rclone:` backend (which starts rclone with its own environment), see `name:path`.
public struct OnTheFlyRemote: Sendable, Equatable {
    public struct Parameter: Sendable, Equatable {
        public var key: String
        public var value: String
        public init(key: String, value: String) {
            self.key = key
            self.value = value
        }
    }

    /// rclone's backend name, without the leading colon: `s3`, `local`, `sftp`, …
    public var backend: String
    public var parameters: [Parameter]
    public var path: String

    public init(backend: String, parameters: [Parameter], path: String) {
        self.backend = backend
        self.parameters = parameters
        self.path = path
    }

    /// Parses rclone's syntax (rclone 1.60 `fspath.Parse`): parameter names are `[A-Za-z0-9_]`, a name
    /// alone means `=true`, a value that starts with `"` or `'` runs to the matching quote (doubled inside
    /// for a literal quote), and the first `:` after the parameters starts the path. The error never
    /// quotes the text: it may hold keys.
    public static func parse(_ text: String) throws -> OnTheFlyRemote {
        func fail(_ reason: String) -> CloudBackupError {
            .configuration(["BACKUP_REMOTE: not a valid rclone on-the-fly remote (\(reason)); expected `:backend,key=value,key2=\"quoted,value\":path`, like `:s3,provider=Ceph,endpoint=https://rgw.example.org,access_key_id=…,secret_access_key=…:bucket/path`."])
        }
        let characters = Array(text)
        guard characters.first == ":" else { throw fail("it does not start with `:`") }
        var index = 1
        var backend = ""
        while index < characters.count, characters[index] != ",", characters[index] != ":" {
            let character = characters[index]
            guard character.isASCII && (character.isLetter || character.isNumber || "_- ".contains(character)) else {
                throw fail("the backend name may only contain letters, digits, `_`, `-` and spaces")
            }
            backend.append(character)
            index += 1
        }
        guard !backend.isEmpty, !backend.hasPrefix("-") else { throw fail("the backend name is missing") }
        guard index < characters.count else { throw fail("no `:` ends the backend and its parameters") }

        var parameters: [Parameter] = []
        while characters[index] == "," {
            index += 1
            var key = ""
            while index < characters.count, !",:=".contains(characters[index]) {
                let character = characters[index]
                guard character.isASCII && (character.isLetter || character.isNumber || character == "_") else {
                    throw fail("parameter names may only contain letters, digits and `_`")
                }
                key.append(character)
                index += 1
            }
            guard !key.isEmpty else { throw fail("a parameter name is empty") }
            guard index < characters.count else { throw fail("no `:` ends the parameters") }
            guard characters[index] == "=" else {
                parameters.append(Parameter(key: key, value: "true"))
                continue
            }
            index += 1
            var value = ""
            if index < characters.count, characters[index] == "\"" || characters[index] == "'" {
                let quote = characters[index]
                index += 1
                while true {
                    guard index < characters.count else { throw fail("a quoted value of \(key) has no closing quote") }
                    if characters[index] == quote {
                        if index + 1 < characters.count, characters[index + 1] == quote {
                            value.append(quote)
                            index += 2
                            continue
                        }
                        index += 1
                        break
                    }
                    value.append(characters[index])
                    index += 1
                }
                guard index < characters.count, characters[index] == "," || characters[index] == ":" else {
                    throw fail("the quoted value of \(key) must be followed by `,` or `:`")
                }
            } else {
                while index < characters.count, characters[index] != ",", characters[index] != ":" {
                    value.append(characters[index])
                    index += 1
                }
                guard index < characters.count else { throw fail("no `:` ends the value of \(key)") }
                // `endpoint=https://host` ends at its own `:`, and the rest, keys included, would become
                // the path on rclone's command line.
                if characters[index] == ":", characters[(index + 1)...].starts(with: "//") {
                    throw fail("the value of \(key) looks like a URL: put it in double quotes, as rclone needs for a value holding `:` or `,`")
                }
            }
            parameters.append(Parameter(key: key, value: value))
        }
        return OnTheFlyRemote(backend: backend, parameters: parameters, path: String(characters[(index + 1)...]))
    }

    /// The remote's name for rclone: fixed for one configuration, different for remotes that differ in
    /// anything but their secret values, so the server's record (which names `rclonePath`) tells two
    /// such destinations apart. Derived from the masked form only: the name shows nothing secret.
    public var remoteName: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a: stable across runs and machines, unlike Hasher
        for byte in maskedConfiguration.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        let hex = String(hash >> 32, radix: 16)
        return "cloudbackup_" + String(repeating: "0", count: 8 - hex.count) + hex
    }

    public var rclonePath: String { "\(remoteName):\(path)" }

    /// The variables that define the remote for rclone (rclone 1.60 reads `RCLONE_CONFIG_` + the
    /// upper-cased remote name + `_` + the upper-cased key).
    public var environment: [String: String] {
        let prefix = Self.environmentPrefix(remoteName)
        var variables = ["\(prefix)TYPE": backend]
        for parameter in parameters { variables["\(prefix)\(parameter.key.uppercased())"] = parameter.value }
        return variables
    }

    static func environmentPrefix(_ name: String) -> String { "RCLONE_CONFIG_\(name.uppercased())_" }

    /// The values of parameters whose names say they hold a credential (`looksSecret`), for redaction.
    /// Not every value: redacting `host=127.0.0.1` or `port=9` everywhere would blank the tool's own
    /// messages ("nothing answers on ***:8080") and help nobody.
    public var secretValues: [String] {
        parameters.filter { RcloneNames.looksSecret($0.key) }.map(\.value).filter { !["true", "false"].contains($0.lowercased()) }
    }

    /// `:backend,key=value,…` with every value that looks secret shown as `***`.
    var maskedConfiguration: String {
        ([":\(backend)"] + parameters.map { parameter in
            "\(parameter.key)=\(RcloneNames.looksSecret(parameter.key) ? "***" : Self.quotedIfNeeded(parameter.value))"
        }).joined(separator: ",")
    }

    /// What the user wrote, values that look secret as `***`: for messages.
    public var maskedConnectionString: String { "\(maskedConfiguration):\(path)" }

    static func quotedIfNeeded(_ value: String) -> String {
        guard value.contains(where: { ",:\"'".contains($0) }) else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// Which rclone remotes are defined, read the way rclone 1.60 reads them, without running rclone.
enum RcloneNames {
    /// Parameter names whose values are credentials (s3 `secret_access_key`, `session_token`, sftp
    /// `pass`, `key_file_pass`, webdav `bearer_token`, drive `client_secret`, …).
    static func looksSecret(_ key: String) -> Bool {
        let lowered = key.lowercased()
        // `sas_url` (Azure) and `*_url` in general can carry a signed token; `bearer`, `cookie` likewise.
        // (Not "auth": `env_auth` is a switch.)
        return ["key", "secret", "pass", "token", "session", "credential", "sas", "bearer", "cookie"].contains { lowered.contains($0) }
            || (lowered.hasSuffix("url") && lowered != "endpoint")
    }

    /// The configuration file rclone uses: RCLONE_CONFIG; else `$XDG_CONFIG_HOME/rclone/rclone.conf`
    /// (when XDG_CONFIG_HOME is set) or `~/.config/rclone/rclone.conf`, unless only the old
    /// `~/.rclone.conf` exists.
    static func configFile(environment: [String: String], exists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) -> String {
        if let explicit = environment["RCLONE_CONFIG"] { return explicit }
        let home = environment["HOME"] ?? "/root"
        let preferred = environment["XDG_CONFIG_HOME"].map { "\($0)/rclone/rclone.conf" } ?? "\(home)/.config/rclone/rclone.conf"
        let legacy = "\(home)/.rclone.conf"
        return !exists(preferred) && exists(legacy) ? legacy : preferred
    }

    /// The `[section]` names of an rclone.conf, in order; nil for an encrypted one (its names cannot
    /// be read without its password).
    static func sections(in text: String) -> [String]? {
        var names: [String] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("RCLONE_ENCRYPT_V0:") { return nil }
            guard trimmed.hasPrefix("["), trimmed.hasSuffix("]"), trimmed.count > 2 else { continue }
            names.append(String(trimmed.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces))
        }
        return names
    }

    /// Remotes defined by `RCLONE_CONFIG_<NAME>_TYPE` (rclone lists them in lower case).
    static func environmentRemotes(_ environment: [String: String]) -> [String] {
        environment.keys.filter { $0.hasPrefix("RCLONE_CONFIG_") && $0.hasSuffix("_TYPE") && $0.count > "RCLONE_CONFIG__TYPE".count }
            .map { String($0.dropFirst("RCLONE_CONFIG_".count).dropLast("_TYPE".count)).lowercased() }
            .sorted()
    }

    static func isDefinedInEnvironment(_ name: String, _ environment: [String: String]) -> Bool {
        environment["\(OnTheFlyRemote.environmentPrefix(name))TYPE"] != nil
    }

    /// Values of remotes defined in the environment whose parameter names look secret
    /// (`RCLONE_CONFIG_MYS3_SECRET_ACCESS_KEY`): rclone may quote them in an error.
    static func environmentSecrets(_ environment: [String: String]) -> [String] {
        environment.filter { name, _ in
            guard name.hasPrefix("RCLONE_CONFIG_"), !name.hasSuffix("_TYPE") else { return false }
            return looksSecret(String(name.dropFirst("RCLONE_CONFIG_".count)))
        }.map(\.value)
    }

    /// `https://…`, `s3://…`: a URL is not an rclone path (rclone would take `https` for a remote's name).
    static func looksLikeURL(_ text: String) -> Bool {
        guard let range = text.range(of: "://") else { return false }
        let scheme = text[..<range.lowerBound]
        return !scheme.isEmpty && scheme.first!.isLetter
            && scheme.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "+.-".contains($0)) }
    }

    /// BACKUP_REMOTE as messages may show it: an on-the-fly remote's secret values and a URL's password as `***`.
    static func displayed(_ text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix(":") {
            if let remote = try? OnTheFlyRemote.parse(trimmed) { return remote.maskedConnectionString }
            // Unparsable: show no parameter at all, only the backend.
            let backend = trimmed.dropFirst().prefix { $0 != "," && $0 != ":" }
            return ":\(backend),…"
        }
        if looksLikeURL(trimmed), var components = URLComponents(string: trimmed) {
            if components.password != nil { components.password = "***" }
            if let masked = components.string { return masked }
        }
        return trimmed
    }
}
