import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Makes stock rclone reach INFN Cloud storage: an S3 remote with `env_auth = true` whose AWS profile
/// runs `cloud-backup aws-credential-process` (oidc-agent token → STS keys). Both files are rewritten
/// only when their content changes, with mode 0600, so every command can call this cheaply.
public enum InfnSetup {
    public static func rcloneSection(settings: InfnSettings) -> [String] {
        ["type = s3", "provider = Ceph", "env_auth = true", "endpoint = \(settings.s3Endpoint.absoluteString)"]
    }

    public static func awsConfig(executable: String) -> String {
        "[profile \(InfnSettings.awsProfile)]\ncredential_process = \(shellQuoted(executable)) aws-credential-process\n"
    }

    /// `text` with section `[name]` set to `lines` (added when missing); other sections untouched.
    public static func replacingSection(_ name: String, with lines: [String], in text: String) -> String {
        var output: [String] = []
        var inSection = false
        var replaced = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("[") && trimmed.hasSuffix("]") {
                inSection = trimmed == "[\(name)]"
                if inSection {
                    output.append(line)
                    output += lines
                    replaced = true
                    continue
                }
            }
            if !inSection { output.append(line) }
        }
        while output.last == "" { output.removeLast() }
        if !replaced {
            if !output.isEmpty { output.append("") }
            output.append("[\(name)]")
            output += lines
        }
        return output.joined(separator: "\n") + "\n"
    }

    /// Writes `content` to `path` (mode 0600, atomically) unless it is already there. True if it wrote.
    @discardableResult
    public static func writeIfChanged(_ content: String, to path: String) throws -> Bool {
        if let current = try? String(contentsOfFile: path, encoding: .utf8), current == content {
            // Written by an older version, or copied in by hand: still only ours to read.
            var status = stat()
            if lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_uid == getuid(), status.st_mode & 0o077 != 0 {
                chmod(path, 0o600)
            }
            return false
        }
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try writeAtomically(Data(content.utf8), to: path)
        } catch let error as CloudBackupError {
            throw error
        } catch {
            throw CloudBackupError.cannotWrite(path: path, reason: describe(error))
        }
        return true
    }

    /// The running binary's path, for the credential_process line.
    public static func currentExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return CommandLine.arguments.first ?? "cloud-backup" }
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The rclone remote and the AWS profile, up to date. True if anything was written.
    @discardableResult
    public static func writeFiles(settings: InfnSettings, paths: InfnSettings.Paths, executable: String = currentExecutable()) throws -> Bool {
        let current = (try? String(contentsOfFile: paths.rcloneConfig, encoding: .utf8)) ?? ""
        let rclone = replacingSection(InfnDefaults.remoteName, with: rcloneSection(settings: settings), in: current)
        let wroteRclone = try writeIfChanged(rclone, to: paths.rcloneConfig)
        let wroteAWS = try writeIfChanged(awsConfig(executable: executable), to: paths.awsConfig)
        return wroteRclone || wroteAWS
    }

    /// `prepare` for commands without a ping of their own (the restic passthrough, start-server,
    /// restore): a failure is logged and its exit code returned; nil when everything is ready.
    static func prepareOrExitCode(_ configuration: Configuration, context: JobContext) -> Int32? {
        do {
            try prepare(configuration, context: context)
            return nil
        } catch {
            let failure = CloudBackupError.from(error)
            context.log.error(failure.description)
            return failure.exitCode
        }
    }

    /// Everything a command needs before rclone touches INFN storage: the account (OIDC_PASSWORD
    /// verified against it first, so a wrong one starts and writes nothing), the agent, the files.
    public static func prepare(_ configuration: Configuration, context: JobContext) throws {
        guard let settings = configuration.infn, let agent = agent(configuration, context: context) else { return }
        try agent.ensureLoaded()
        if try writeFiles(settings: settings, paths: configuration.infnPaths) {
            context.log.info("wrote the \(InfnDefaults.remoteName) rclone remote (\(configuration.infnPaths.rcloneConfig)) and its AWS profile (\(configuration.infnPaths.awsConfig))")
        }
    }

    public static func agent(_ configuration: Configuration, context: JobContext) -> OidcAgent? {
        configuration.infn.map {
            OidcAgent(settings: $0, paths: configuration.infnPaths, environment: configuration.childEnvironment, runner: context.runner, log: context.log)
        }
    }
}
