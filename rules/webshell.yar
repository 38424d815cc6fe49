/*
  Web shells in file contents: the YARA twin of the core of webshell-content.yml, loaded by
  `trapline sweep` (through yara-x) from the rule directory, and readable by the `yara` command
  too (bench/sweep_vs_yara.sh compares the two on the same tree with this file).

  YARA has no file name, so the name- and extension-bound rules of the YAML pack (.htaccess,
  .user.ini, image renamed .php, small-file heuristics) have no twin here except where the
  content alone is enough.

  meta.severity is read by trapline (info, low, medium, high, critical).
*/

rule php_input_to_exec
{
    meta:
        description = "PHP web shell: request input passed to eval/system/exec"
        severity = "critical"
    strings:
        $call = /\b(eval|assert|system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec)\s*\(\s*@?\s*((base64_decode|str_rot13|gzinflate|gzuncompress|urldecode|stripslashes|trim|hex2bin|strrev)\s*\(\s*)*@?\s*\$_(GET|POST|REQUEST|COOKIE|SERVER|FILES)\b/ nocase
        $tick = /(^|\n)[ \t]*`\s*\$_(GET|POST|REQUEST|COOKIE)\s*\[|([=;{}]|<\?php|<\?=|echo|print|return)\s*`\s*\$_(GET|POST|REQUEST|COOKIE)\s*\[/ nocase
    condition:
        any of them
}

rule php_input_as_function
{
    meta:
        description = "PHP web shell: request input called as a function"
        severity = "critical"
    strings:
        $direct = /\$_(GET|POST|REQUEST|COOKIE)\s*\[[^\]]{1,40}\]\s*\(/ nocase
        $cuf = /\b(call_user_func|call_user_func_array|array_map|register_shutdown_function)\s*\(\s*@?\$_(GET|POST|REQUEST|COOKIE)\b/ nocase
        $var = /\$[a-zA-Z_0-9]+\s*\(\s*@?\s*\$_(GET|POST|REQUEST|COOKIE)\s*\[/ nocase
    condition:
        any of them
}

rule php_eval_decode_chain
{
    meta:
        description = "PHP obfuscated code: eval of decoded data"
        severity = "critical"
    strings:
        $a = /\b(eval|assert)\s*\(\s*@?\s*(gzinflate|gzuncompress|gzdecode|str_rot13|base64_decode|strrev|hex2bin|convert_uudecode|rawurldecode)\s*\(/ nocase
    condition:
        $a
}

rule php_hidden_function_name
{
    meta:
        description = "PHP obfuscated code: function name hidden with str_rot13 or strrev"
        severity = "critical"
    strings:
        $rot = /str_rot13\s*\(\s*['"](riny|nffreg|flfgrz|rkrp|furyy_rkrp|cnffgueh|cbcra|cebp_bcra|onfr64_qrpbqr|tmvasyngr|perngr_shapgvba)['"]/ nocase
        $rev = /strrev\s*\(\s*['"](lave|tressa|metsys|cexe|cexe_llehs|urhtssap|nepop|nepo_corp|edoced_46esab|etalfnizg|noitcnuf_etaerc)['"]/ nocase
    condition:
        any of them
}

rule php_create_function_input
{
    meta:
        description = "PHP web shell: create_function with request input"
        severity = "critical"
    strings:
        $a = /create_function\s*\([^;]{0,200}\$_(GET|POST|REQUEST|COOKIE)/ nocase
    condition:
        $a
}

rule php_in_image
{
    meta:
        description = "PHP code inside an image"
        severity = "critical"
    strings:
        $php = /<\?php\s/ nocase
        $short = /<\?=\s*[$`@]/
    condition:
        (uint32be(0) == 0x47494638 or uint32be(0) == 0x89504E47 or uint16be(0) == 0xFFD8)
        and any of them
}

rule htaccess_php_handler
{
    meta:
        description = ".htaccess maps image or text extensions to PHP"
        severity = "critical"
    strings:
        $add = /(^|\n)[ \t]*(AddType|AddHandler)[ \t]+[^ \t\n]*php[^ \t\n]*[ \t]+[^\n]*\.(jpe?g|gif|png|bmp|ico|txt|html?)\b/ nocase
        $prepend = /(^|\n)[ \t]*php_(admin_)?value[ \t]+auto_(prepend|append)_file[ \t]/ nocase
    condition:
        any of them
}

rule jsp_exec
{
    meta:
        description = "JSP web shell: request parameter and Runtime.exec or ProcessBuilder"
        severity = "critical"
    strings:
        $req = /request\.get(Parameter|Header|InputStream|Reader)\s*\(/
        $exec = /Runtime\s*\.\s*getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(/
        $pb = /new\s+ProcessBuilder\s*\(/
    condition:
        $req and ($exec or $pb)
}

rule asp_eval_request
{
    meta:
        description = "ASP/ASPX web shell: request input evaluated"
        severity = "critical"
    strings:
        $a = /\b(eval|execute|executeglobal)\s*\(?\s*request\s*(\.\s*(item|form|querystring|params)\s*)?[\(\[]/ nocase
    condition:
        $a
}
