// swift-tools-version:6.0
import PackageDescription

// No package dependencies, by design: Foundation, Dispatch and the toolchain's XCTest only.
let package = Package(
    name: "cloud-backup",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "cloud-backup", targets: ["cloud-backup"]),
    ],
    targets: [
        // Everything that decides something lives in the library; `main` only hands over.
        .target(name: "CloudBackupCore", dependencies: ["CHTTPClient"]),
        // Healthchecks pings through the system's libcurl, loaded only when a job pings (see its source).
        .target(name: "CHTTPClient", linkerSettings: [.linkedLibrary("dl")]),
        .executableTarget(name: "cloud-backup", dependencies: ["CloudBackupCore"]),
        // Test helpers both test targets share (a Prometheus text-format parser).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "CloudBackupCoreTests", dependencies: ["CloudBackupCore", "TestSupport"]),
        // End-to-end tests drive the built binary against real restic and rclone.
        .testTarget(name: "EndToEndTests", dependencies: ["CloudBackupCore", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
