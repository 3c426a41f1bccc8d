// nPanel GraphQL console: a sign-in form, then GraphiQL with the token.
//
// The token lives in this tab's sessionStorage (never localStorage): it
// survives a reload, dies with the tab, and is not shared with other tabs.
// It goes out as "Authorization: Bearer" on HTTP and in the websocket's
// connection_init payload ({"Authorization": "Bearer ..."}), the shape the
// server's InitFunc reads: browsers cannot set headers on a websocket.
(function () {
  'use strict';

  var SESSION_KEY = 'npanel.console.session';
  // The page is served at the GraphQL endpoint itself, so the endpoint is
  // wherever the page is, also behind a proxy that adds a path prefix.
  var endpoint = location.pathname;
  var wsURL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + location.pathname;

  var LOGIN = 'mutation ConsoleLogin($username: String!, $password: String!) {' +
    ' login(username: $username, password: $password) { token expiresAt user { name role } } }';

  var $ = function (id) { return document.getElementById(id); };
  var root = null;

  function loadSession() {
    try {
      var s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
      if (s && s.token && Date.parse(s.expiresAt) > Date.now()) {
        return s;
      }
    } catch (e) { /* unreadable: start over */ }
    sessionStorage.removeItem(SESSION_KEY);
    return null;
  }

  // post sends one GraphQL operation by POST and returns its data, or throws
  // an Error carrying the first GraphQL error's message and code.
  async function post(query, variables, token) {
    var headers = { 'Content-Type': 'application/json', 'Accept': 'application/json' };
    if (token) {
      headers.Authorization = 'Bearer ' + token;
    }
    var resp;
    try {
      resp = await fetch(endpoint, {
        method: 'POST', headers: headers, credentials: 'omit', cache: 'no-store',
        body: JSON.stringify({ query: query, variables: variables })
      });
    } catch (e) {
      throw new Error('Cannot reach the server: ' + e.message);
    }
    var body;
    try {
      body = await resp.json();
    } catch (e) {
      throw new Error('The server answered HTTP ' + resp.status + ' without a GraphQL response.');
    }
    if (body.errors && body.errors.length) {
      var first = body.errors[0];
      var err = new Error(first.message);
      err.code = first.extensions && first.extensions.code;
      throw err;
    }
    return body.data;
  }

  function loginMessage(err) {
    switch (err.code) {
      case 'UNAUTHENTICATED':
        return 'Wrong username or password.';
      case 'RATE_LIMITED':
        return 'Too many failed sign-ins from here: wait, then try again; each further failure makes the wait longer. (' + err.message + ')';
      default:
        return err.message || String(err);
    }
  }

  function showError(msg) {
    var el = $('login-error');
    el.textContent = msg;
    el.hidden = !msg;
  }

  function showLogin(msg) {
    $('app').hidden = true;
    $('login').hidden = false;
    $('login-submit').disabled = false;
    showError(msg || '');
    $('password').value = '';
    ($('username').value ? $('password') : $('username')).focus();
  }

  function showConsole(session) {
    $('login').hidden = true;
    $('app').hidden = false;
    $('whoami').textContent = 'Signed in as ' + session.user.name + ' (' + session.user.role + ')';
    var auth = { Authorization: 'Bearer ' + session.token };
    var send = GraphiQL.createFetcher({
      url: endpoint,
      subscriptionUrl: wsURL,
      headers: auth,
      wsConnectionParams: auth,
      // The server answers plain JSON; no multipart incremental delivery.
      enableIncrementalDelivery: false
    });
    // The fetcher sends a subscription by websocket when the document it is
    // given holds one. GraphiQL hands it the editor's last parse, which lags
    // the text by a debounce: run right after typing, a subscription went
    // out by POST (and the server answered its first event only). Parse
    // what is sent instead.
    var fetcher = function (params, opts) {
      opts = Object.assign({}, opts);
      try {
        opts.documentAST = GraphiQL.GraphQL.parse(params.query);
      } catch (e) { /* the server explains the syntax error */ }
      return send(params, opts);
    };
    root = ReactDOM.createRoot($('graphiql'));
    root.render(React.createElement(GraphiQL, {
      fetcher: fetcher,
      // GraphiQL keeps tabs, history and the headers editor in this tab's
      // session too, never in localStorage.
      storage: sessionStorage,
      shouldPersistHeaders: false,
      defaultQuery: '# Signed in as ' + session.user.name + '. Run a query with Ctrl-Enter.\n{\n  me {\n    name\n    role\n  }\n}\n'
    }));
    // A token past its expiry is refused anyway; go back to the form then.
    var left = Date.parse(session.expiresAt) - Date.now();
    setTimeout(function () { signOut('Your session expired; sign in again.'); }, Math.min(left, 0x7fffffff));
  }

  // signOut forgets the token. Reloading (with a message for the form)
  // closes every websocket opened with it and drops GraphiQL's state.
  function signOut(msg) {
    sessionStorage.removeItem(SESSION_KEY);
    if (msg) {
      sessionStorage.setItem(SESSION_KEY + '.message', msg);
    }
    if (root) {
      root.unmount();
      root = null;
    }
    location.reload();
  }

  async function signOutEverywhere() {
    var s = loadSession();
    if (s) {
      try {
        await post('mutation ConsoleLogout { logout }', {}, s.token);
      } catch (e) {
        if (!window.confirm('Revoking the tokens failed (' + e.message + '). Sign out of this tab anyway?')) {
          return;
        }
      }
    }
    signOut('Signed out: every login token of this user is revoked.');
  }

  async function onSubmit(ev) {
    ev.preventDefault();
    var button = $('login-submit');
    button.disabled = true;
    showError('');
    try {
      var data = await post(LOGIN, { username: $('username').value, password: $('password').value });
      var session = data.login;
      sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
      $('password').value = '';
      showConsole(session);
    } catch (err) {
      showLogin(loginMessage(err));
    }
  }

  $('login-form').addEventListener('submit', onSubmit);
  $('signout').addEventListener('click', function () { signOut(''); });
  $('signout-all').addEventListener('click', signOutEverywhere);

  var message = sessionStorage.getItem(SESSION_KEY + '.message');
  sessionStorage.removeItem(SESSION_KEY + '.message');
  var session = loadSession();
  if (session) {
    showConsole(session);
  } else {
    showLogin(message);
  }
}());
