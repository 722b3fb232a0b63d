import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Whether a backup reads every file it is given, while the container stays non-root.
///
/// The image's user (uid 1000) cannot read what only root or another user may read (databases, /etc,
/// service data). The image therefore carries a second restic, `installedRestic`, with the file
/// capability `cap_dac_read_search+ep` (read any file and list any directory, nothing else; restic's
/// own documentation describes this set-up). The kernel refuses to start a file whose effective
/// capabilities it cannot grant (EPERM), which is what happens in a container without
/// `cap_add: [DAC_READ_SEARCH]`, the default: so the copy is used only when the capability is in this
/// process's bounding set (`CapBnd` in /proc/self/status), and the plain restic otherwise. A backup
/// that then meets files it may not read (exit 3) says how to add the capability.
/// docs/design.md ("Reading every file") gives the reasons and the alternatives.
public enum ReadAccess: Sendable, Equatable {
    /// The capability-bearing restic can run: backups use it.
    case everyFile(restic: String)
    /// It is installed, but the container was started without DAC_READ_SEARCH.
    case capabilityMissing
    /// The container has the capability, but no_new_privs (`security_opt: no-new-privileges`) keeps
    /// file capabilities from taking effect.
    case noNewPrivileges
    /// No capability-bearing restic (outside the image), or root (who reads every file anyway).
    case plain

    /// Where the image installs the capability-bearing restic (Dockerfile).
    public static let installedRestic = "/usr/local/libexec/cloud-backup/restic"
    /// CAP_DAC_READ_SEARCH (linux/capability.h).
    static let capabilityBit: UInt64 = 1 << 2

    /// This process's situation.
    public static func detect(restic path: String = installedRestic) -> ReadAccess {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return decide(processStatus: status, installed: access(path, X_OK) == 0, isRoot: geteuid() == 0, restic: path)
    }

    /// The decision, from the text of /proc/self/status.
    static func decide(processStatus: String, installed: Bool, isRoot: Bool, restic path: String) -> ReadAccess {
        guard installed, !isRoot else { return .plain }
        var fields: [String: String] = [:]
        for line in processStatus.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        // Unknown: the plain restic, which always starts.
        guard let bounding = fields["CapBnd"].flatMap({ UInt64($0, radix: 16) }) else { return .plain }
        guard bounding & capabilityBit != 0 else { return .capabilityMissing }
        if fields["NoNewPrivs"] == "1" { return .noNewPrivileges }
        return .everyFile(restic: path)
    }

    /// The restic that reads a backup's files.
    public var backupRestic: String {
        if case .everyFile(let path) = self { return path }
        return "restic"
    }

    /// For `status`: nil outside the image, where there is nothing to say.
    var statusLine: StatusCheck? {
        switch self {
        case .everyFile:
            return .pass("read access", "backups read every file (restic with the DAC_READ_SEARCH capability)")
        case .capabilityMissing:
            return .pass("read access", "backups read only what uid \(getuid()) may read; to read every file (other users', root's) add `cap_add: [DAC_READ_SEARCH]` to the service in docker-compose.yaml (docker/podman run: `--cap-add DAC_READ_SEARCH`)")
        case .noNewPrivileges:
            return .pass("read access", "backups read only what uid \(getuid()) may read: the container has DAC_READ_SEARCH, but no-new-privileges keeps it from restic (remove `no-new-privileges` from security_opt to read every file)")
        case .plain:
            return nil
        }
    }

    /// What to do about files a backup could not read (restic's exit 3), given restic's error text.
    func advice(unreadable errors: String) -> String {
        let denied = errors.localizedCaseInsensitiveContains("permission denied")
        switch self {
        case .capabilityMissing where denied:
            return "This container may only read what uid \(getuid()) may read: to back up every file, add the DAC_READ_SEARCH capability "
                + "(docker-compose.yaml: `cap_add: [DAC_READ_SEARCH]` under the cloud-backup service, then `docker compose up -d` or `docker-compose up -d`; "
                + "docker/podman run: `--cap-add DAC_READ_SEARCH`), or leave them out with --exclude"
        case .noNewPrivileges where denied:
            return "The container has the DAC_READ_SEARCH capability, but no-new-privileges keeps it from restic: remove `no-new-privileges` "
                + "from the service's security_opt (docker run: --security-opt), or leave them out with --exclude"
        case .everyFile where denied:
            return "restic had the DAC_READ_SEARCH capability and still could not read them, so something other than file permissions refuses them "
                + "(SELinux: add `:z` to the bind mount; an NFS mount with root squashing; a FUSE mount without allow_other), or leave them out with --exclude"
        default:
            return "Give this user read access to them (run the backup as a user who can read them), or leave them out with --exclude"
        }
    }
}
