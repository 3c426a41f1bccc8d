package db

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/npanel/npanel/validate"
)

// definerDump is what mariadb-dump --routines --triggers writes for a
// view, a procedure, a function and a trigger of cPanel's database user
// cpuser_app, and a view of root.
const definerDump = "/*M!999999\\- enable the sandbox mode */ \n" +
	"/*!40101 SET NAMES utf8mb4 */;\n" +
	"CREATE TABLE `items` (`id` int NOT NULL, `v` varchar(64), PRIMARY KEY (`id`));\n" +
	"CREATE TABLE `audit` (`n` int);\n" +
	"INSERT INTO `items` VALUES (1,'DEFINER=`root`@`localhost` is data'),(2,'b');\n" +
	"/*!50003 SET @saved_sql_mode = @@sql_mode */ ;\n" +
	"/*!50003 SET sql_mode = 'STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION' */ ;\n" +
	"DELIMITER ;;\n" +
	"/*!50003 CREATE*/ /*!50017 DEFINER=`cpuser_app`@`localhost`*/ /*!50003 TRIGGER `items_ai` AFTER INSERT ON `items` FOR EACH ROW INSERT INTO audit VALUES (NEW.id) */;;\n" +
	"DELIMITER ;\n" +
	"/*!50003 SET sql_mode = @saved_sql_mode */ ;\n" +
	"DELIMITER ;;\n" +
	"CREATE DEFINER=`cpuser_app`@`localhost` PROCEDURE `add_item`(IN i INT)\n" +
	"    SQL SECURITY DEFINER\n" +
	"BEGIN\n  INSERT INTO items VALUES (i, 'added');\nEND ;;\n" +
	"CREATE DEFINER='cpuser_app'@'%' FUNCTION `item_count`() RETURNS int(11)\n" +
	"    READS SQL DATA\nRETURN (SELECT COUNT(*) FROM items) ;;\n" +
	"DELIMITER ;\n" +
	"/*!50001 CREATE ALGORITHM=UNDEFINED */\n" +
	"/*!50013 DEFINER=`cpuser_app`@`localhost` SQL SECURITY DEFINER */\n" +
	"/*!50001 VIEW `items_v` AS select `items`.`v` AS `v` from `items` */;\n" +
	"/*!50001 CREATE ALGORITHM=UNDEFINED */\n" +
	"/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n" +
	"/*!50001 VIEW `root_v` AS select user() AS `u` */;\n" +
	"DELIMITER ;;\n" +
	"/*!50106 CREATE*/ /*!50117 DEFINER=`cpuser_app`@`localhost`*/ /*!50106 EVENT `cleanup` ON SCHEDULE EVERY 1 DAY STARTS '2026-01-01 00:00:00' ON COMPLETION NOT PRESERVE DISABLE DO DELETE FROM audit */ ;;\n" +
	"DELIMITER ;\n"

// Objects with DEFINERs import under the scoped loader: the archive's
// user's become the new user's (who then uses them), root's go to a user
// of the database, never to root; a DEFINER the filter cannot see fails
// the load instead of reaching anyone.
func TestImportForeignDumpDefiners(t *testing.T) {
	env, srv := mariaEnv(t)
	root := srv.MustRoot(t)
	const m = validate.EngineMariaDB
	const pw = "Definer-Pass-77"
	ctx := ctxT(t)
	mustApply(t, env, ensureDB(m, "alice_wp", "alice"))
	mustApply(t, env, ensureUser(m, "alice_app", "alice", pw, map[string][]string{"alice_wp": {"ALL"}}))

	changes, err := testModule.ImportForeignDump(ctx, env, "alice_wp", strings.NewReader(definerDump), map[string]string{"cpuser_app": "alice_app"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]DefinerChange{}
	for _, c := range changes {
		got[c.Kind+" "+c.Name] = c
		t.Logf("%+v", c)
	}
	for k, want := range map[string]DefinerChange{
		"VIEW items_v":        {From: "cpuser_app", To: "alice_app@localhost", Mapped: true},
		"VIEW root_v":         {From: "root", To: "alice_app@localhost"},
		"PROCEDURE add_item":  {From: "cpuser_app", To: "alice_app@localhost", Mapped: true},
		"FUNCTION item_count": {From: "cpuser_app", To: "alice_app@localhost", Mapped: true},
		"TRIGGER items_ai":    {From: "cpuser_app", To: "alice_app@localhost", Mapped: true},
	} {
		c := got[k]
		if c.From != want.From || c.To != want.To || c.Mapped != want.Mapped {
			t.Errorf("%s: %+v, want %+v", k, c, want)
		}
	}
	if len(changes) != 6 {
		t.Errorf("%d changes", len(changes))
	}
	// Nothing is root's or the loader's.
	var n int
	if err := root.QueryRow(`SELECT (SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'alice_wp' AND DEFINER <> 'alice_app@localhost')
		+ (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'alice_wp' AND DEFINER <> 'alice_app@localhost')
		+ (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'alice_wp' AND DEFINER <> 'alice_app@localhost')
		+ (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'alice_wp' AND (DEFINER <> 'alice_app@localhost' OR STATUS <> 'DISABLED'))`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d objects of another definer, %v", n, err)
	}
	// The data line that looks like a DEFINER is kept.
	var v string
	if err := root.QueryRow("SELECT v FROM alice_wp.items WHERE id = 1").Scan(&v); err != nil || v != "DEFINER=`root`@`localhost` is data" {
		t.Errorf("data %q %v", v, err)
	}
	// The new user calls them.
	udb, err := srv.Open("alice_app", pw, "alice_wp")
	if err != nil {
		t.Fatal(err)
	}
	defer udb.Close()
	if _, err := udb.Exec("CALL add_item(3)"); err != nil {
		t.Fatalf("CALL: %v", err)
	}
	if err := udb.QueryRow("SELECT item_count()").Scan(&n); err != nil || n != 3 {
		t.Errorf("item_count() %d %v", n, err)
	}
	if err := udb.QueryRow("SELECT COUNT(*) FROM items_v").Scan(&n); err != nil || n != 3 {
		t.Errorf("items_v %d %v", n, err)
	}
	if err := udb.QueryRow("SELECT COUNT(*) FROM audit").Scan(&n); err != nil || n != 1 {
		t.Errorf("trigger fired %d times, %v", n, err)
	}
	var who string
	if err := udb.QueryRow("SELECT u FROM root_v").Scan(&who); err != nil || !strings.HasPrefix(who, "alice_app@") {
		t.Errorf("root_v runs as %q %v", who, err)
	}

	// Hostile: a definer clause the filter does not recognise reaches the
	// server, which refuses it to the loader.
	for _, d := range []string{
		"CREATE DEFINER /**/ = `root`@`localhost` VIEW v2 AS SELECT 1;\n",
		"CREATE /*!50013 DEFINER */ = root@localhost VIEW v3 AS SELECT 1;\n",
		"GRANT ALL ON *.* TO `alice_app`@`localhost`;\n",
	} {
		_, err := testModule.ImportForeignDump(ctx, env, "alice_wp", strings.NewReader(d), map[string]string{"root": "alice_app"})
		if err == nil {
			t.Errorf("%q imported", d)
		}
		t.Logf("%q: %v", d, err)
	}
	if err := root.QueryRow("SELECT COUNT(*) FROM information_schema.VIEWS WHERE DEFINER LIKE 'root@%' AND TABLE_SCHEMA = 'alice_wp'").Scan(&n); err != nil || n != 0 {
		t.Errorf("root views: %d %v", n, err)
	}
}

func TestDefinerFilter(t *testing.T) {
	f := &definerFilter{r: bufio.NewReaderSize(strings.NewReader(definerDump), 4096), atStart: true, seen: map[string]string{}}
	out, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(out), "DEFINER="); c != 1 { // the data line's
		t.Errorf("%d DEFINER= left:\n%s", c, out)
	}
	want := map[string]string{"EVENT cleanup": "cpuser_app", "TRIGGER items_ai": "cpuser_app", "PROCEDURE add_item": "cpuser_app", "FUNCTION item_count": "cpuser_app", "VIEW items_v": "cpuser_app", "VIEW root_v": "root"}
	for k, v := range want {
		if f.seen[k] != v {
			t.Errorf("%s: %q, want %q (%v)", k, f.seen[k], v, f.seen)
		}
	}
}

// FuzzDefinerFilter: the filter never panics, passes INSERT lines as they
// are, and leaves no DEFINER=user@host clause it recognises in the other
// lines (its seed corpus is in testdata/fuzz).
func FuzzDefinerFilter(f *testing.F) {
	f.Add(definerDump)
	f.Add("CREATE DEFINER=`a``b`@`%` VIEW `x``y` AS SELECT 1;\nINSERT INTO t VALUES ('DEFINER=`r`@`l`');\n")
	f.Add("/*!50013 DEFINER='r\\'x'@'h' */\n/*!50001 VIEW v AS select 1 */;\nDEFINER=a@b DEFINER=c@d PROCEDURE p()\n")
	f.Fuzz(func(t *testing.T, in string) {
		fl := &definerFilter{r: bufio.NewReaderSize(strings.NewReader(in), 4096), atStart: true, seen: map[string]string{}}
		out, err := io.ReadAll(fl)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.SplitAfter(string(out), "\n") {
			tl := strings.TrimLeft(line, " \t")
			if len(line) < 4000 && !hasPrefixFold([]byte(tl), "INSERT ") && !hasPrefixFold([]byte(tl), "REPLACE ") && definerRe.MatchString(line) {
				t.Errorf("DEFINER left in %q (input %q)", line, in)
			}
		}
	})
}

// FuzzPlainFilter: the PostgreSQL dump filter never panics and ends with
// COMMIT exactly when the dump was read to its end.
func FuzzPlainFilter(f *testing.F) {
	f.Add("--\n\\restrict K\nCOPY t (a) FROM stdin;\nGRANT x;\n\\.\nALTER TABLE x OWNER TO y;\n\\unrestrict K\n")
	f.Add("GRANT ALL ON t TO u;")
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReaderSize(strings.NewReader(in), 64)
		head, key, err := untrustedHeader(br)
		if err != nil || strings.Contains(string(head), "\\restrict") && key != "" {
			t.Fatalf("%q %q %v", head, key, err)
		}
		fl := &plainFilter{r: br, unrestrict: key, atStart: true, done: func() error { return nil }}
		out, err := io.ReadAll(fl)
		if err != nil || !fl.committed || !strings.HasSuffix(string(out), "\nCOMMIT;\n") {
			t.Errorf("%q: %q %v", in, out, err)
		}
	})
}
