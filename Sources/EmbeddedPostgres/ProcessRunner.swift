import Foundation

/// What a finished command printed (stdout and stderr together) and how it exited.
public struct CommandResult: Sendable {
    public var exitCode: Int32
    public var output: String
}

/// Starts server tools with `posix_spawn` and `waitpid`.
///
/// Foundation's `Process.waitUntilExit` was seen to hang on Linux when called from several test
/// threads at once, and a pipe would never reach end-of-file if a daemon (the postmaster) inherited
/// it, so output goes to a temporary file that is read once the command has exited.
public enum ProcessRunner {
    /// Runs `executable` (an absolute path) with `arguments` and waits for it to exit.
    public static func run(_ executable: String, _ arguments: [String]) throws -> CommandResult {
        let outputPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("voicemeter-command-\(UUID().uuidString).log").path
        defer { unlink(outputPath) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard status == 0 else {
            throw EmbeddedPostgresError(message: "cannot run \(executable): \(String(cString: strerror(status)))", output: "")
        }
        var waitStatus: Int32 = 0
        while waitpid(pid, &waitStatus, 0) < 0 {
            guard errno == EINTR else {
                throw EmbeddedPostgresError(message: "waiting for \(executable) failed (errno \(errno))", output: "")
            }
        }
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // WIFEXITED / WEXITSTATUS are macros: exit code in bits 8-15 when the low 7 bits are zero.
        let exitCode: Int32 = waitStatus & 0x7f == 0 ? (waitStatus >> 8) & 0xff : 128 + (waitStatus & 0x7f)
        return CommandResult(exitCode: exitCode, output: output)
    }

    /// The first executable named `name` on `PATH` (or in the usual system directories).
    public static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
