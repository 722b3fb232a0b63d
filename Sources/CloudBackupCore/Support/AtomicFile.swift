import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes `data` to `path` through a temporary file in the same directory and a rename, so readers
/// see the old content or the new, never a part. Mode 0600 unless told otherwise. The one way the
/// tool writes its own files (server record, metrics, the INFN rclone remote and AWS profile).
func writeAtomically(_ data: Data, to path: String, mode: Int = 0o600) throws {
    let temporary = "\(path).\(getpid()).tmp"
    guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: mode]) else {
        throw CloudBackupError.cannotWrite(path: path, reason: "cannot create \(temporary)")
    }
    guard rename(temporary, path) == 0 else {
        let code = errno
        unlink(temporary)
        throw CloudBackupError.cannotWrite(path: path, reason: String(cString: strerror(code)))
    }
}
