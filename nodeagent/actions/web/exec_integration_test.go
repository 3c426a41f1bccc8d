package web_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// execPage tries every way of starting a process the pool should refuse;
// each attempt would create its own marker file in the account's tmp. It
// first tries to lift the restriction as a tenant can: ini_set (a
// .user.ini is written beside it by the test).
const execPage = `<?php
$dir = $_GET["d"];
echo "ini_set:", var_export(@ini_set("disable_functions", ""), true), "\n";
$tries = [
	"exec" => function ($m) { exec("/usr/bin/touch " . $m); },
	"shell_exec" => function ($m) { shell_exec("/usr/bin/touch " . $m); },
	"system" => function ($m) { system("/usr/bin/touch " . $m); },
	"passthru" => function ($m) { passthru("/usr/bin/touch " . $m); },
	"backtick" => function ($m) { ` + "`/usr/bin/touch $m`" + `; },
	"popen" => function ($m) { $p = popen("/usr/bin/touch " . $m, "r"); if ($p) { pclose($p); } },
	"proc_open" => function ($m) { $p = proc_open(["/usr/bin/touch", $m], [], $pipes); if ($p) { proc_close($p); } },
	"putenv" => function ($m) { if (putenv("NPANEL_T=1")) { touch($m); } },
];
foreach ($tries as $name => $f) {
	try {
		$f($dir . "/marker-" . $name);
		echo $name, ": returned\n";
	} catch (Throwable $e) {
		echo $name, ": ", $e->getMessage(), "\n";
	}
}
echo "done\n";
`

var execTries = []string{"exec", "shell_exec", "system", "passthru", "backtick", "popen", "proc_open", "putenv"}

// TestPHPExecDisabledByDefault is finding 3 of issue 23: a default pool
// must not let an account's PHP start processes, whatever the account
// tries; a plan with allowExec gets them back.
func TestPHPExecDisabledByDefault(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	tmp := filepath.Join(a.Home, "tmp")
	writeAs(t, a, "public_html/x.php", execPage)
	writeAs(t, a, "public_html/.user.ini", "disable_functions =\n")
	const host = "npt-exec.example.com"
	sp := spec(site(host, "public_html", "8.2"))

	// run requests the page until PHP answers it whole and, after a pool
	// change, with the new pool (want); the first pool has no predecessor.
	run := func(want string) string {
		t.Helper()
		var body string
		// Requests that meet PHP-FPM's reload answer 502, and one may still
		// reach the old pool; wait for the new one. The markers are cleared
		// before each request, so those left are the answering request's.
		testenv.WaitFor(t, 20*time.Second, "PHP answers "+strconv.Quote(want), func() bool {
			for _, n := range execTries {
				_ = os.Remove(filepath.Join(tmp, "marker-"+n))
			}
			_, _, body, _ = s.tryGet(host, "/x.php?d="+tmp)
			return strings.HasSuffix(body, "done\n") && strings.Contains(body, want)
		})
		return body
	}

	s.ensure(t, a, sp, false)
	body := run("")
	for _, n := range execTries {
		if exists(filepath.Join(tmp, "marker-"+n)) {
			t.Errorf("%s ran a command in a default pool:\n%s", n, body)
		}
		if n != "backtick" && !strings.Contains(body, n+": Call to undefined function "+n+"()") {
			t.Errorf("%s: want PHP's undefined function error:\n%s", n, body)
		}
	}
	if !strings.Contains(body, "ini_set:false") {
		t.Errorf("ini_set changed disable_functions:\n%s", body)
	}

	sp.Php = &agentpb.PHPPoolLimits{AllowExec: true}
	s.ensure(t, a, sp, false)
	body = run("exec: returned")
	for _, n := range execTries {
		if !exists(filepath.Join(tmp, "marker-"+n)) {
			t.Errorf("%s did not run with allow_exec:\n%s", n, body)
		}
	}

	// And back: turning it off again takes effect.
	sp.Php.AllowExec = false
	s.ensure(t, a, sp, false)
	body = run("exec: Call to undefined function")
	for _, n := range execTries {
		if exists(filepath.Join(tmp, "marker-"+n)) {
			t.Errorf("%s ran after allow_exec was withdrawn:\n%s", n, body)
		}
	}
}
