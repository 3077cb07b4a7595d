# Locates the onnxruntime C API headers (the Python wheels ship none) and sets ONNXRUNTIME_INCLUDE_DIR.
#
# Order: ONNXRUNTIME_INCLUDE_DIR (CMake or environment variable), a system install in
# /usr/include/onnxruntime, else Debian's libonnxruntime-dev (suite trixie) unpacked into the build tree.
# The download uses a private apt state (own sources list, lists and cache dirs) pointing at the mirror the
# machine's apt sources already use, so nothing here names a host, and the machine's apt state is untouched.
# The unpacked headers are kept in the build tree: rebuilds do not fetch again.

set(NCNN_ORT_DEB_SUITE "trixie" CACHE STRING "Debian suite whose libonnxruntime-dev provides the headers")

function(_ncnn_check_headers dir out)
  if(EXISTS "${dir}/onnxruntime_c_api.h")
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()

# The first Debian archive URI (and its keyring) in the machine's apt sources: deb822 *.sources files,
# then one-line sources.list entries. Security and update suites are skipped: the package lives in the
# main archive.
function(_ncnn_find_mirror out_uri out_keyring)
  set(uri "")
  set(keyring "")
  file(GLOB deb822 "/etc/apt/sources.list.d/*.sources")
  foreach(f IN LISTS deb822)
    file(READ "${f}" text)
    string(REPLACE "\n\n" ";" stanzas "${text}")
    foreach(stanza IN LISTS stanzas)
      if(NOT stanza MATCHES "(^|\n)Types:[^\n]*deb([ \t\n]|$)")
        continue()
      endif()
      if(NOT stanza MATCHES "(^|\n)URIs:[ \t]*([^ \t\n]+)")
        continue()
      endif()
      set(candidate "${CMAKE_MATCH_2}")
      # Keep a stanza that lists a plain release suite ("bookworm"), not only -security/-updates ones.
      if(stanza MATCHES "(^|\n)Suites:[ \t]*([^\n]*)")
        if(NOT CMAKE_MATCH_2 MATCHES "(^|[ \t])[a-z]+([ \t]|$)")
          continue()
        endif()
      endif()
      set(uri "${candidate}")
      if(stanza MATCHES "(^|\n)Signed-By:[ \t]*(/[^ \t\n]+)")
        set(keyring "${CMAKE_MATCH_2}")
      endif()
      break()
    endforeach()
    if(uri)
      break()
    endif()
  endforeach()
  if(NOT uri AND EXISTS "/etc/apt/sources.list")
    file(STRINGS "/etc/apt/sources.list" lines REGEX "^[ \t]*deb[ \t]")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "\\[[^]]*\\]" "" line "${line}")
      if(line MATCHES "^[ \t]*deb[ \t]+([^ \t]+)[ \t]+([a-z]+)[ \t]")
        set(uri "${CMAKE_MATCH_1}")
        break()
      endif()
    endforeach()
  endif()
  if(NOT keyring AND EXISTS "/usr/share/keyrings/debian-archive-keyring.gpg")
    set(keyring "/usr/share/keyrings/debian-archive-keyring.gpg")
  endif()
  set(${out_uri} "${uri}" PARENT_SCOPE)
  set(${out_keyring} "${keyring}" PARENT_SCOPE)
endfunction()

function(_ncnn_fetch_debian_headers root out_dir)
  set(include_dir "${root}/unpacked/usr/include/onnxruntime")
  _ncnn_check_headers("${include_dir}" cached)
  if(cached)
    set(${out_dir} "${include_dir}" PARENT_SCOPE)
    return()
  endif()
  find_program(NCNN_APT_GET apt-get)
  find_program(NCNN_DPKG dpkg)
  if(NOT NCNN_APT_GET OR NOT NCNN_DPKG)
    message(FATAL_ERROR "onnxruntime headers not found: set ONNXRUNTIME_INCLUDE_DIR to the directory holding "
                        "onnxruntime_c_api.h (no apt-get/dpkg here to fetch Debian's libonnxruntime-dev).")
  endif()
  _ncnn_find_mirror(mirror keyring)
  if(NOT mirror)
    message(FATAL_ERROR "onnxruntime headers not found and no Debian mirror in /etc/apt/sources*: set "
                        "ONNXRUNTIME_INCLUDE_DIR to the directory holding onnxruntime_c_api.h.")
  endif()
  set(state "${root}/apt")
  file(REMOVE_RECURSE "${state}" "${root}/deb" "${root}/unpacked")
  file(MAKE_DIRECTORY "${state}/lists/partial" "${state}/cache/archives/partial" "${state}/parts" "${state}/prefs"
       "${root}/deb")
  set(options "")
  if(keyring)
    set(options " [signed-by=${keyring}]")
  endif()
  file(WRITE "${state}/sources.list" "deb${options} ${mirror} ${NCNN_ORT_DEB_SUITE} main\n")
  set(apt_args
      -o "Dir::Etc::SourceList=${state}/sources.list"
      -o "Dir::Etc::SourceParts=${state}/parts"
      -o "Dir::Etc::PreferencesParts=${state}/prefs"
      -o "Dir::State::Lists=${state}/lists"
      -o "Dir::Cache=${state}/cache"
      -o "Debug::NoLocking=1"
      -o "APT::Sandbox::User=root")  # as root, apt would download as _apt, who cannot write the build tree
  message(STATUS "Fetching libonnxruntime-dev (${NCNN_ORT_DEB_SUITE}) for the onnxruntime headers")
  execute_process(COMMAND "${NCNN_APT_GET}" ${apt_args} -qq update
                  RESULT_VARIABLE rc OUTPUT_VARIABLE log ERROR_VARIABLE log)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "apt-get update (private state in ${state}) failed:\n${log}\n"
                        "Set ONNXRUNTIME_INCLUDE_DIR to the directory holding onnxruntime_c_api.h instead.")
  endif()
  execute_process(COMMAND "${NCNN_APT_GET}" ${apt_args} -qq download libonnxruntime-dev
                  WORKING_DIRECTORY "${root}/deb" RESULT_VARIABLE rc OUTPUT_VARIABLE log ERROR_VARIABLE log)
  file(GLOB debs "${root}/deb/libonnxruntime-dev_*.deb")
  if(NOT rc EQUAL 0 OR NOT debs)
    message(FATAL_ERROR "apt-get download libonnxruntime-dev failed:\n${log}\n"
                        "Set ONNXRUNTIME_INCLUDE_DIR to the directory holding onnxruntime_c_api.h instead.")
  endif()
  list(GET debs 0 deb)
  execute_process(COMMAND "${NCNN_DPKG}" -x "${deb}" "${root}/unpacked" RESULT_VARIABLE rc ERROR_VARIABLE log)
  _ncnn_check_headers("${include_dir}" found)
  if(NOT rc EQUAL 0 OR NOT found)
    message(FATAL_ERROR "unpacking ${deb} gave no onnxruntime_c_api.h:\n${log}")
  endif()
  file(REMOVE_RECURSE "${state}")
  set(${out_dir} "${include_dir}" PARENT_SCOPE)
endfunction()

if(NOT ONNXRUNTIME_INCLUDE_DIR AND DEFINED ENV{ONNXRUNTIME_INCLUDE_DIR})
  set(ONNXRUNTIME_INCLUDE_DIR "$ENV{ONNXRUNTIME_INCLUDE_DIR}")
endif()
if(ONNXRUNTIME_INCLUDE_DIR)
  _ncnn_check_headers("${ONNXRUNTIME_INCLUDE_DIR}" ok)
  if(NOT ok)
    message(FATAL_ERROR "ONNXRUNTIME_INCLUDE_DIR=${ONNXRUNTIME_INCLUDE_DIR} holds no onnxruntime_c_api.h")
  endif()
  set(_ncnn_ort_source "ONNXRUNTIME_INCLUDE_DIR")
elseif(EXISTS "/usr/include/onnxruntime/onnxruntime_c_api.h")
  set(ONNXRUNTIME_INCLUDE_DIR "/usr/include/onnxruntime")
  set(_ncnn_ort_source "system")
else()
  _ncnn_fetch_debian_headers("${CMAKE_BINARY_DIR}/onnxruntime-headers" ONNXRUNTIME_INCLUDE_DIR)
  set(_ncnn_ort_source "Debian ${NCNN_ORT_DEB_SUITE} libonnxruntime-dev")
endif()

file(STRINGS "${ONNXRUNTIME_INCLUDE_DIR}/onnxruntime_c_api.h" _ncnn_api_line REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX MATCH "[0-9]+$" ONNXRUNTIME_HEADER_API_VERSION "${_ncnn_api_line}")
message(STATUS "onnxruntime headers: ${ONNXRUNTIME_INCLUDE_DIR} (${_ncnn_ort_source}, C API ${ONNXRUNTIME_HEADER_API_VERSION})")
