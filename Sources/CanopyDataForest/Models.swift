import CanopyCore
import Foundation

// The vendor's request and response shapes. Every field is optional when decoding, so that what is missing is
// reported in the vendor's words (`invalid request parameter (namePrefix, '')...`) rather than as a decoding failure.

struct AiAppData: Codable, Sendable, Equatable {
    struct Input: Codable, Sendable, Equatable {
        var hdfs: String?
        var path: String?
    }
    struct Output: Codable, Sendable, Equatable {
        var hdfs: String?
        var overwrite: Bool?
        var path: String?
    }
    var input: [Input]?
    var output: [Output]?
}

struct AiAppDocker: Codable, Sendable, Equatable {
    var args: String?
    var command: String?
    var env: [String: String]?
    var exposeTcpPorts: [Int]?
    var image: String?
    var workdir: String?
}

struct AiAppResource: Codable, Sendable, Equatable {
    var cpuCount: Int?
    var gpuCount: Int?
    var gpuModel: String?
    var memoryMb: Int?
}

/// A workspace's configuration: the defaults of the AI apps submitted to it.
struct AiAppTypeSpec: Codable, Sendable, Equatable {
    var data: AiAppData?
    var docker: AiAppDocker?
    var name: String?
    var queueName: String?
    var resource: AiAppResource?
    var userPackageUri: String?
}

struct SubmitAiAppRequest: Codable, Sendable {
    var aiWorkspaceId: String?
    var namePrefix: String?
    var queueName: String?
    var data: AiAppData?
    var docker: AiAppDocker?
    var resource: AiAppResource?
}

struct CreateAiWorkspaceRequest: Codable, Sendable {
    var accountId: String?
    var name: String?
    var description: String?
    var configuration: AiAppTypeSpec?
}

struct SetConfigurationRequest: Codable, Sendable {
    var id: String?
    var configuration: AiAppTypeSpec?
}

struct IDRequest: Codable, Sendable {
    var id: String?
}

struct SearchRequest: Codable, Sendable {
    struct Search: Codable, Sendable {
        var accountId: String?
        var typeName: String?
        var aiWorkspaceId: String?
    }
    var search: Search?
}

struct CheckNameRequest: Codable, Sendable {
    var accountId: String?
    var name: String?
}

/// A workspace as Canopy keeps it (a dialect record; the store does not read it).
struct WorkspaceDocument: Codable, Sendable {
    struct Entry: Codable, Sendable {
        var configuration: AiAppTypeSpec
        var createdAt: Date
        var modifiedAt: Date
    }
    var id: String
    var accountId: String
    var name: String
    var description: String
    /// Every configuration set, oldest first; the last is in force.
    var configurations: [Entry]
    var createdAt: Date
    var modifiedAt: Date

    var current: AiAppTypeSpec { configurations.last?.configuration ?? AiAppTypeSpec() }
}
