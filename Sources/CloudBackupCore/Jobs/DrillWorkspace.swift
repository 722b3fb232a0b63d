import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The drill's private temporary directory: `cloud-backup-drill-<uuid>`, mode 0700, holding the
/// restore target (`restore/`) and a lock file (`lock`, flocked for the drill's life).
///
/// Removed by the drill on every way out (success, failure, stop request). One left by a drill that
/// was SIGKILLed is removed by the next drill, which can prove that its owner has ended: the flock is
/// free (the same proof the state directory uses everywhere, docs/design.md "Why flock").
final class DrillWorkspace {
    static let prefix = "cloud-backup-drill-"

    let path: String
    private let lock: FileLock
    private var removed = false

    /// Where restic restores: files land under target + their original absolute path.
    var target: String { "\(path)/restore" }

    private init(path: String, lock: FileLock) {
        self.path = path
        self.lock = lock
    }

    /// The parent to use: the state directory, else TMPDIR (or /tmp), whichever first is outside every
    /// backed-up path: restoring inside a backed-up directory would write into the live data (and a
    /// backup running meanwhile would save the copies). nil when both are inside.
    static func chooseParent(stateDirectory: String, temporaryDirectory: String, backedUp: [String]) -> String? {
        [stateDirectory, temporaryDirectory].first { parent in
            let real = realPath(parent) ?? parent
            return !backedUp.contains { isSameOrBelow(real, $0) || isSameOrBelow(parent, $0) }
        }
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Creates the directory (0700 whatever the umask) and takes its lock.
    static func create(in parent: String) throws -> DrillWorkspace {
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CloudBackupError.cannotWrite(path: parent, reason: describe(error))
        }
        let path = "\(parent)/\(prefix)\(UUID().uuidString.lowercased())"
        guard mkdir(path, 0o700) == 0 else {
            throw CloudBackupError.cannotWrite(path: path, reason: String(cString: strerror(errno)))
        }
        chmod(path, 0o700)
        switch FileLock.acquire("\(path)/lock") {
        case .success(let lock):
            return DrillWorkspace(path: path, lock: lock)
        case .failure(let failure):
            _ = removeTree(path)
            let reason: String
            if case .cannotOpen(let code) = failure { reason = String(cString: strerror(code)) } else { reason = "locked by another process" }
            throw CloudBackupError.cannotWrite(path: "\(path)/lock", reason: reason)
        }
    }

    /// Removes the directory and everything restic restored into it; nil on success, else why not.
    func remove() -> String? {
        guard !removed else { return nil }
        removed = true
        let problem = Self.removeTree(path) ? nil : "\(String(cString: strerror(errno)))"
        lock.release()
        return problem
    }

    /// Removes what drills that have ended left in `parent` (SIGKILLed, or the machine stopped): each
    /// `cloud-backup-drill-*` directory of this user whose lock nobody holds. Returns the paths removed.
    @discardableResult
    static func removeAbandoned(in parent: String) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: parent) else { return [] }
        var removedPaths: [String] = []
        for name in names where name.hasPrefix(prefix) {
            let path = "\(parent)/\(name)"
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid() else { continue }
            let lockPath = "\(path)/lock"
            if access(lockPath, F_OK) != 0 {
                // Made an instant before its lock: only an old one is abandoned for sure.
                guard Date().timeIntervalSince1970 - Double(info.st_mtim.tv_sec) > 3600 else { continue }
                if removeTree(path) { removedPaths.append(path) }
                continue
            }
            guard case .success(let lock) = FileLock.acquire(lockPath) else { continue }
            if removeTree(path) { removedPaths.append(path) }
            lock.release()
        }
        return removedPaths
    }

    /// Deletes a tree without ever following a symbolic link (a restored link may point at live data),
    /// making each directory writable first: restic restores directories with the snapshot's modes,
    /// read-only ones included. Names are handled as bytes (a file name need not be UTF-8).
    static func removeTree(_ path: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0 else { return errno == ENOENT }
        guard info.st_mode & S_IFMT == S_IFDIR else { return unlink(path) == 0 || errno == ENOENT }
        chmod(path, 0o700)
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if descriptor >= 0 {
            removeContents(of: descriptor)
            close(descriptor)
        }
        return rmdir(path) == 0 || errno == ENOENT
    }

    /// Empties the directory open as `descriptor`, depth first, relative to descriptors (openat,
    /// unlinkat): nothing is resolved through a path that could change under us.
    private static func removeContents(of descriptor: Int32) {
        guard let names = entryNames(ofDirectory: descriptor) else { return }
        for name in names {
            var info = stat()
            guard fstatat(descriptor, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            if info.st_mode & S_IFMT == S_IFDIR {
                fchmodat(descriptor, name, 0o700, 0)
                let child = openat(descriptor, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if child >= 0 {
                    removeContents(of: child)
                    close(child)
                }
                unlinkat(descriptor, name, AT_REMOVEDIR)
            } else {
                unlinkat(descriptor, name, 0)
            }
        }
    }
}
