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
        // HTTP (Healthchecks pings, STS) is URLSession from FoundationNetworking, which is libcurl on
        // Linux. A release build with `-Xswiftc -static-stdlib` links FoundationNetworking statically and
        // so needs libcurl's development files at link time (`-lcurl`: Debian/Ubuntu libcurl4-openssl-dev;
        // the binary then needs libcurl4 at run time). The exported symbol is the CA hook of
        // Support/HTTPClient.swift (CurlTrustHook): builds that load FoundationNetworking as a shared
        // library (debug, tests) must export it for URLSession's libcurl calls to reach it.
        .target(name: "CloudBackupCore",
                linkerSettings: [.unsafeFlags(["-Xlinker", "--export-dynamic-symbol=curl_multi_add_handle"], .when(platforms: [.linux]))]),
        .executableTarget(name: "cloud-backup", dependencies: ["CloudBackupCore"]),
        // Test helpers both test targets share (a Prometheus text-format parser).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "CloudBackupCoreTests", dependencies: ["CloudBackupCore", "TestSupport"]),
        // End-to-end tests drive the built binary against real restic and rclone.
        .testTarget(name: "EndToEndTests", dependencies: ["CloudBackupCore", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
