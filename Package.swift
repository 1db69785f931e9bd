// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "canopy",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "canopy", targets: ["canopy"]),
        .executable(name: "canopy-bench", targets: ["canopy-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-nio-ssh.git", from: "0.15.1"),
    ],
    targets: [
        // Domain model and ports: pure Swift, no I/O.
        .target(name: "CanopyCore", swiftSettings: swiftSettings),
        // A strict XML reader for bodies from outside: pure Swift, no dependencies (not even Foundation), so that it
        // can be fuzzed on its own (scripts/fuzz.sh) and used by any dialect that speaks XML.
        .target(name: "CanopyXML", swiftSettings: swiftSettings),
        // Small C helpers for Linux system calls Swift cannot reach directly (pidfd_open).
        .target(name: "CCanopySys"),
        // The per-task supervisor process: joins cgroups, drops privileges, records the exit status.
        .executableTarget(name: "canopy-shim"),
        // Adapters.
        .target(
            name: "CanopySQLite",
            dependencies: ["CanopyCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        // What every runtime on a host shares: task directories and safe staging, per-task identities, GPU discovery.
        .target(name: "CanopyHost", dependencies: ["CanopyCore", "CCanopySys"], swiftSettings: swiftSettings),
        // The process runtime: tasks as supervised processes on this machine, in cgroups.
        .target(
            name: "CanopyLocal",
            dependencies: ["CanopyCore", "CanopyHost", "CCanopySys", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // The container runtime and image engine: a Docker-compatible engine's API on a unix socket.
        .target(
            name: "CanopyDocker",
            dependencies: [
                "CanopyCore", "CanopyHost",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Slurm: workloads as jobs of an existing cluster, through its commands.
        .target(
            name: "CanopySlurm",
            dependencies: ["CanopyCore", "CanopyHost", "CCanopySys", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // Services: submission, scheduling, reconciliation.
        .target(
            name: "CanopyServices",
            dependencies: [
                "CanopyCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                // scrypt for passwords (already built for swift-certificates, which the SSH and HTTP clients use).
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // HTTP edge: request context, auth, error rendering, the native API and its OpenAPI document.
        .target(
            name: "CanopyHTTP",
            dependencies: [
                "CanopyCore", "CanopyServices",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The proxy listener: HTTP and WebSocket traffic to tasks' ports, authenticated, streamed both ways.
        .target(
            name: "CanopyProxy",
            dependencies: [
                "CanopyCore", "CanopyServices",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Dialect: NCP Data Forest (AI apps, AI workspaces, accounts; signature v2; JSON and XML).
        // The SCNet (Sugon AC) dialect: tokens, container instances, images.
        .target(
            name: "CanopySCNet",
            dependencies: [
                "CanopyCore", "CanopyServices", "CanopyHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CanopyDataForest",
            dependencies: [
                "CanopyCore", "CanopyServices", "CanopyHTTP", "CanopyXML",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The SSH server: users' stock ssh into their instances, by their registered keys (swift-nio-ssh).
        .target(
            name: "CanopySSH",
            dependencies: [
                "CanopyCore", "CanopyServices",
                .product(name: "NIOSSH", package: "swift-nio-ssh"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Composition: configuration and buildApplication, shared by `canopy serve` and the tests.
        .target(
            name: "CanopyApp",
            dependencies: [
                "CanopyCore", "CanopySQLite", "CanopyHost", "CanopyLocal", "CanopyDocker", "CanopySlurm", "CanopyServices", "CanopyHTTP", "CanopyDataForest",
                "CanopySCNet",
                "CanopyProxy", "CanopySSH",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The command line: `canopy serve` and the client commands.
        .target(
            name: "CanopyCLI",
            dependencies: [
                "CanopyCore", "CanopyApp", "CanopyHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "canopy", dependencies: ["CanopyCLI", "canopy-shim"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "canopy-bench",
            // Drives the real `canopy` binary (built alongside) and seeds histories through the SQLite adapter.
            dependencies: ["CanopyCore", "CanopySQLite", "CanopySlurm", "CanopyServices", "canopy", "canopy-shim"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CanopyTesting",
            dependencies: [
                "CanopyCore", "CanopyApp", "canopy-shim",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            path: "Tests/CanopyTesting",
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "CanopyCoreTests", dependencies: ["CanopyCore"], swiftSettings: swiftSettings),
        .testTarget(name: "CanopyXMLTests", dependencies: ["CanopyXML"], swiftSettings: swiftSettings),
        .testTarget(name: "CanopySQLiteTests", dependencies: ["CanopySQLite", "CanopyTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "CanopyLocalTests", dependencies: ["CanopyLocal", "CanopyHost", "CanopyTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "CanopyDockerTests", dependencies: ["CanopyDocker", "CanopyHost", "CanopyTesting"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CanopySlurmTests", dependencies: ["CanopySlurm", "CanopyHost", "CanopyTesting", "CanopyApp", "canopy"], swiftSettings: swiftSettings),
        .testTarget(name: "CanopyServicesTests", dependencies: ["CanopyServices", "CanopyTesting", "CanopySQLite"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CanopySCNetTests",
            dependencies: [
                "CanopySCNet", "CanopyTesting", "CanopyApp", "CanopySQLite",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CanopyDataForestTests",
            dependencies: [
                "CanopyDataForest", "CanopyTesting", "CanopyApp",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CanopyAppTests",
            dependencies: [
                "CanopyApp", "CanopyCLI", "CanopyTesting", "canopy",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
