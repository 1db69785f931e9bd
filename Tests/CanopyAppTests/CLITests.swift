import ArgumentParser
import CanopyCore
import Foundation
import Testing

@testable import CanopyCLI

/// Parses a command line as `canopy` does (with `run`'s arguments normalized), or returns the error's message and exit code.
private func parse(_ arguments: [String]) -> Result<any ParsableCommand, ParseFailure> {
    do {
        return .success(try CanopyCommand.parseAsRoot(RunArguments.normalizeCommandLine(arguments)))
    } catch {
        return .failure(ParseFailure(message: CanopyCommand.message(for: error), exitCode: CanopyCommand.exitCode(for: error).rawValue))
    }
}

private struct ParseFailure: Error {
    var message: String
    var exitCode: Int32
}

/// The `canopy run` a command line parses to, or nil.
private func runCommand(_ arguments: [String]) -> RunCommand? {
    if case .success(let command) = parse(arguments) { return command as? RunCommand }
    return nil
}

/// The error a command line fails with, or what the command that is not `canopy run` (help) ends with; a
/// `canopy run` parsed without error is reported as exit code -1.
private func failure(_ arguments: [String]) -> ParseFailure {
    switch parse(arguments) {
    case .success(var command):
        guard !(command is RunCommand) else { return ParseFailure(message: "", exitCode: -1) }
        do {
            try command.run()
            return ParseFailure(message: "", exitCode: 0)
        } catch {
            return ParseFailure(message: CanopyCommand.fullMessage(for: error), exitCode: CanopyCommand.exitCode(for: error).rawValue)
        }
    case .failure(let f): return f
    }
}

@Suite("the CLI's parsing and output, without a server")
struct CLITests {
    @Test(
        "the command starts at -- or at the first word that is not an option",
        arguments: [
            (["--", "echo", "hi"], ["--", "echo", "hi"]),
            (["python3", "train.py", "--epochs", "3"], ["--", "python3", "train.py", "--epochs", "3"]),
            (["--gpus", "1", "python3", "-c", "print(1)"], ["--gpus", "1", "--", "python3", "-c", "print(1)"]),
            (["--cpus", "-1", "true"], ["--cpus", "-1", "--", "true"]),
            (["-d", "--hold", "-e", "A=1", "sh", "--", "x"], ["-d", "--hold", "-e", "A=1", "--", "sh", "--", "x"]),
            (["--name=x", "true"], ["--name=x", "--", "true"]),
            (["-de", "A=1", "env"], ["-de", "A=1", "--", "env"]),
            (["--help"], ["--help"]),
            // An unknown option stays before the `--`, where the parser refuses it.
            (["--gpu", "1", "--", "true"], ["--gpu", "--", "1", "--", "true"]),
        ])
    func normalize(arguments: [String], expected: [String]) {
        #expect(RunArguments.normalize(arguments) == expected)
        #expect(RunArguments.normalizeCommandLine(["run"] + arguments) == ["run"] + expected)
        #expect(RunArguments.normalizeCommandLine(["ps"] + arguments) == ["ps"] + arguments)
    }

    @Test("everything after the command is passed through untouched, with or without --")
    func passThrough() throws {
        #expect(runCommand(["run", "python3", "train.py", "--epochs", "3"])?.command == ["python3", "train.py", "--epochs", "3"])
        #expect(runCommand(["run", "--", "cmd", "--flag", "--", "-x"])?.command == ["cmd", "--flag", "--", "-x"])
        #expect(runCommand(["run", "-d", "--gpus", "1", "python3", "-c", "print(1)"])?.command == ["python3", "-c", "print(1)"])
        #expect(runCommand(["run", "-de", "A=1", "env"]).map { [$0.detach ? "d" : ""] + $0.env + $0.command } == ["d", "A=1", "env"])
        let run = try #require(runCommand(["run", "--priority", "-5", "--cpus", "500m", "--memory", "1.5Gi", "--", "true"]))
        let body = try run.workloadRequest()
        #expect(body.priority == -5 && body.resources?.cpuMillis == 500 && body.resources?.memoryMiB == 1536)
    }

    @Test(
        "a mistyped option is an error with a suggestion, never the start of a command",
        arguments: [
            (["run", "--gpu", "1", "--", "true"], "Unknown option '--gpu'. Did you mean '--gpus'?"),
            (["run", "--memroy", "1Gi", "--", "true"], "Unknown option '--memroy'. Did you mean '--memory'?"),
            (["run", "--gpu", "1", "true"], "Unknown option '--gpu'. Did you mean '--gpus'?"),
            (["run", "--detatch", "true"], "Unknown option '--detatch'. Did you mean '--detach'?"),
        ])
    func typo(arguments: [String], message: String) {
        let f = failure(arguments)
        #expect(f.exitCode == ExitCode.validationFailure.rawValue)
        #expect(f.message == message)
    }

    @Test("--help and -h show help, and nothing else")
    func help() {
        for arguments in [["run", "--help"], ["run", "-h"], ["run", "--gpus", "1", "--help"]] {
            let f = failure(arguments)
            #expect(f.exitCode == 0, "\(arguments)")
            #expect(f.message.hasPrefix("OVERVIEW: Run a workload"), "\(arguments): \(f.message)")
        }
        #expect(failure(["run"]).message == "give the command to run, e.g. canopy run -- echo hello")
    }

    @Test(
        "bad and ambiguous quantities are refused with what was probably meant",
        arguments: [
            (["--memory", "512m"], "--memory 512m: lowercase m means milli, as in --cpus 500m; did you mean 512Mi?"),
            (["--memory", "512mb"], "--memory 512mb: lowercase m means milli, as in --cpus 500m; did you mean 512Mi?"),
            (["--memory", "2g"], "--memory 2g: units are case-sensitive: Ki, Mi, Gi, Ti or K, M, G, T; did you mean 2Gi?"),
            (["--memory", "512"], "--memory 512 is 512 bytes; did you mean 512Mi?"),
            (["--memory", "-1Gi"], "--memory must be positive, e.g. 512Mi or 8Gi"),
            (["--memory", "lots"], "--memory: \"lots\" is not a size such as 512Mi or 8Gi (units: Ki, Mi, Gi, Ti; K, M, G, T for powers of 1000)"),
            (["--cpus", "-1"], "--cpus must be positive, e.g. 2, 0.5 or 500m"),
            (["--cpus", "0"], "--cpus must be positive, e.g. 2, 0.5 or 500m"),
            (["--cpus", "two"], "--cpus: \"two\" is not a number of CPUs such as 2, 0.5 or 500m"),
            (["--gpus", "-1"], "--gpus must be 0 or more"),
            (["--tasks", "0"], "--tasks must be positive"),
            (["--max-duration", "-5m"], "--max-duration must be positive, e.g. 30m or 2h"),
        ])
    func quantities(options: [String], message: String) {
        let f = failure(["run"] + options + ["--", "true"])
        #expect(f.exitCode == ExitCode.validationFailure.rawValue)
        #expect(f.message == message)
    }

    @Test("accepted memory forms", arguments: [("512Mi", 512), ("8Gi", 8192), ("1.5Gi", 1536), ("1G", 954), ("512MiB", 512), ("1048576", 1)])
    func memory(text: String, mib: Int) throws {
        #expect(try ResourceArguments.memory(text) == mib)
    }

    @Test("every option of canopy run that takes a value is known to the normalizer")
    func valueOptionsMatchTheCommand() throws {
        struct Dump: Decodable {
            struct Command: Decodable { var arguments: [Argument]? }
            struct Argument: Decodable {
                struct Name: Decodable {
                    var kind: String
                    var name: String
                }
                var kind: String
                var names: [Name]?
            }
            var command: Command
        }
        let dump = try JSONDecoder().decode(Dump.self, from: Data(RunCommand._dumpHelp().utf8))
        let arguments: [Dump.Argument] = dump.command.arguments ?? []
        let names: [Dump.Argument.Name] = arguments.filter { $0.kind == "option" }.flatMap { $0.names ?? [] }
        let options: [String] = names.map { (n: Dump.Argument.Name) -> String in (n.kind == "short" ? "-" : "--") + n.name }
        #expect(Set(options) == RunArguments.valueOptions)
    }

    @Test("no help text gives a default twice")
    func defaultsOnce() {
        func all(_ command: any ParsableCommand.Type) -> [any ParsableCommand.Type] {
            [command] + command.configuration.subcommands.flatMap(all)
        }
        let doubled = try! NSRegularExpression(pattern: #"\(default[^)]*\)[.]?\s+\(default"#)
        for command in all(CanopyCommand.self) {
            let help = CanopyCommand.helpMessage(for: command)
            #expect(doubled.firstMatch(in: help, range: NSRange(help.startIndex..., in: help)) == nil, "\(help)")
        }
        #expect(CanopyCommand.helpMessage(for: LogsCommand.self).contains("Which task. (default: 0)"))
    }

    @Test("counts are plural unless one")
    func plurals() {
        #expect(Format.resources(Resources(cpuMillis: 2000, memoryMiB: 1024, gpus: 2), tasks: 1) == "2 CPUs, 1Gi, 2 GPUs")
        #expect(Format.resources(Resources(cpuMillis: 1000, memoryMiB: 512, gpus: 1, gpuModel: "T4"), tasks: 1) == "1 CPU, 512Mi, 1 T4 GPU")
        #expect(Format.resources(Resources(cpuMillis: 500, memoryMiB: 512), tasks: 3) == "3 tasks x (500m CPU, 512Mi)")
        #expect(Format.count(0, "GPU") == "0 GPUs")
    }

    @Test("a foreground run says why it waits, again when the reason changes, and when it starts")
    func waitReports() {
        var w = Workload(id: "w1", tenant: "t", owner: "o", seq: 1, spec: WorkloadSpec(command: ["true"], hold: true), createdAt: Date())
        var state = WaitReporter.State()
        #expect(WaitReporter.step(w, &state) == ("canopy: workload w1 is pending: held until released (canopy release ID) [Held]", false))
        #expect(WaitReporter.step(w, &state) == (nil, false))
        w.reason = Reason(.insufficientResources, "needs 1 GPU, 0 free")
        #expect(WaitReporter.step(w, &state) == ("canopy: workload w1 is pending: needs 1 GPU, 0 free [InsufficientResources]", false))
        w.phase = .running
        #expect(WaitReporter.step(w, &state) == ("canopy: workload w1 started", true))
        #expect(WaitReporter.step(w, &state) == (nil, true))
        // One that starts at once says nothing.
        var quiet = WaitReporter.State()
        w.reason = nil
        #expect(WaitReporter.step(w, &quiet) == (nil, true))
    }
}
